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
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
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


_MUST_RETURN = "it must return an ml_collections.ConfigDict"


class ConfigFileKindsTest(parameterized.TestCase):
  """A --config that is not a config file's path, or a file that is not a config: exit 2
  naming what it is and what it must be, overrides or not."""

  def _parse(self, config, *overrides):
    # ml_collections loads every config file as the module "config_config", into the one
    # already there: a file without get_config() would find an earlier test's.
    sys.modules.pop("config_config", None)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as exited:
      common.parse_flags(["train", f"--config={config}", *overrides])
    self.assertEqual(2, exited.exception.code, stderr.getvalue())
    self.assertNotIn("Traceback", stderr.getvalue())
    return stderr.getvalue()

  @parameterized.named_parameters(
      ("empty", "", (), "defines no get_config()"),
      ("no_get_config", "x = 1\n", ("--config.train.epochs=3",), "defines no get_config()"),
      ("returns_none", "def get_config():\n  return None\n", (), "returned None"),
      ("returns_none_overridden", "def get_config():\n  return None\n",
       ("--config.train.epochs=3",), "returned None"),
      ("returns_a_dict_overridden", "def get_config():\n  return {'train': {}}\n",
       ("--config.train.epochs=3",), "returned a dict"),
      ("returns_a_list", "def get_config():\n  return [1]\n", (), "returned a list"),
      ("damaged", "def get_config():\n  return \x00\n", (), "null bytes"),
  )
  def test_a_file_that_is_not_a_config(self, body, overrides, fragment):
    path = self.create_tempfile("mine.py", body).full_path
    stderr = self._parse(path, *overrides)
    self.assertIn(fragment, stderr)
    if fragment.startswith(("defines", "returned")):
      self.assertIn(f"{path} ", stderr)
      self.assertIn(_MUST_RETURN, stderr)

  def test_a_directory(self):
    directory = self.create_tempdir().full_path
    self.assertIn(f"--config={directory} is a directory", self._parse(directory))

  def test_a_remote_file(self):
    self.assertIn("copy it here first (`gsutil cp gs://bucket/mine.py .`)",
                  self._parse("gs://bucket/mine.py"))

  def test_an_argument_to_a_get_config_that_takes_none(self):
    stderr = self._parse(os.path.join(testutil.REPO_ROOT, "configs", "base.py") + ":wide")
    self.assertIn("takes 0 positional arguments", stderr)
    self.assertIn("passes 'wide', the text after ':' in --config, to get_config()", stderr)

  def test_a_missing_file(self):
    missing = os.path.join(self.create_tempdir().full_path, "mine.py")
    self.assertIn(f"--config={missing}: no such file", self._parse(missing))

  def test_an_empty_value(self):
    self.assertIn("--config is empty", self._parse(""))


if __name__ == "__main__":
  absltest.main()
