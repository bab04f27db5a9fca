"""Property test: any value for any config key is accepted or refused with a message.

Each example sets one key of the base config to a random value the way an override would
(ConfigDict's type check first, as `--config.key=value` does), then validates the whole
config. A TypeError/ValueError from the type check is the flag parser's clean refusal; from
validation only UserError may come out, never a crash.
"""

import builtins
import contextlib
import io
import math
import os
import tempfile

from absl.testing import absltest
import hypothesis
from hypothesis import strategies as st

from tests import testutil  # first: it imports kmodels (runtime.configure)
from configs import base
from kmodels import validation
from launch import common
from ml_collections import config_flags

# The launchers' --config flag, not marked required here: absltest parses flags too.
config_flags.DEFINE_config_file("config", None, "An experiment config file.", lock_config=True)
from kmodels.errors import UserError


def _leaf_keys(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _leaf_keys(value, f"{prefix}{key}.")
    else:
      yield prefix + key


KEYS = sorted(_leaf_keys(base.get_config()))
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([
        "fit", "custom_loop", "mirrored", "tpu", "mlp", "sgd", "cpu:0", "mixed_bfloat16",
        "synthetic", "ring"
    ]), st.tuples(st.integers(-5, 600)))


class ConfigFuzzTest(absltest.TestCase):

  @hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
  @hypothesis.given(key=st.sampled_from(KEYS), value=VALUES)
  @hypothesis.example(key="train.optimizer.learning_rate", value=math.nan)
  @hypothesis.example(key="train.optimizer.learning_rate", value=math.inf)
  @hypothesis.example(key="train.optimizer.momentum", value=math.nan)
  def test_any_override_is_accepted_or_refused_with_a_message(self, key, value):
    config = base.get_config()
    try:
      testutil.set_key(config, key, value)
    except (TypeError, ValueError):
      return  # the flag parser reports these as "could not load the config: ..."
    try:
      validation.validate(config)
    except UserError as e:
      self.assertTrue(str(e))
      return
    # Accepted: then numbers that drive training must be usable.
    for numeric in ("train.optimizer.learning_rate", "train.optimizer.momentum"):
      if key == numeric:
        self.assertTrue(math.isfinite(value), f"{key}={value!r} was accepted")


# Every exception type a config file can raise, the builtin ones and one of its own.
_RAISABLE = sorted(name for name, value in vars(builtins).items()
                   if isinstance(value, type) and issubclass(value, Exception) and
                   not issubclass(value, (UnicodeError, OSError, ExceptionGroup))  # more args
                   and name[0].isupper()) + ["OwnError"]


class ConfigFileExceptionTest(absltest.TestCase):
  """Whatever a config file's get_config() raises ends as exit 2 and its file and line."""

  @hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
  @hypothesis.given(raised=st.sampled_from(_RAISABLE), at_import=st.booleans())
  @hypothesis.example(raised="ZeroDivisionError", at_import=False)
  @hypothesis.example(raised="RecursionError", at_import=False)
  @hypothesis.example(raised="OwnError", at_import=True)
  def test_any_exception_of_the_config_file_is_exit_2_naming_its_line(self, raised, at_import):
    statement = f"raise {raised}('broken on purpose')"
    body = ("class OwnError(Exception):\n  pass\n" +
            (f"{statement}\ndef get_config():\n  return None\n"
             if at_import else f"def get_config():\n  {statement}\n"))
    line = body.splitlines().index(statement.strip()) + 1 if at_import else 4
    with tempfile.TemporaryDirectory() as directory:
      path = os.path.join(directory, "mine.py")
      with open(path, "w") as f:
        f.write(body)
      stderr = io.StringIO()
      with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as exited:
        common.parse_flags(["train", f"--config={path}"])
    self.assertEqual(2, exited.exception.code)
    self.assertIn(f"the config file {path} raised {raised}: broken on purpose at line {line}",
                  stderr.getvalue())


if __name__ == "__main__":
  absltest.main()
