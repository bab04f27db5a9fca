"""What every launcher does around its one library call."""

import contextlib
import importlib.util
import math
import os
import sys
import traceback

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from kmodels import cpus
from kmodels.errors import UserError
from kmodels.storage import emulator


def define_config_and_workdir(config_help, workdir_help, default_workdir=None):
  """The --config (a locked config file with --config.a.b=v overrides) and --workdir flags.

  --workdir is required unless `default_workdir` is given (launch.train on Vertex AI).
  """
  config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  workdir = flags.DEFINE_string("workdir", default_workdir, workdir_help)
  flags.mark_flags_as_required(["config"] + ([] if default_workdir else ["workdir"]))
  return config, workdir


def define_fraction(name, default, help_text):
  """A float flag between 0 and 1. absl's bounds let NaN through (it compares false with
  both), so a validator refuses it too: either is a flag error, exit 2 in parse_flags."""
  flag = flags.DEFINE_float(name, default, help_text, lower_bound=0.0, upper_bound=1.0)
  flags.register_validator(name,
                           lambda value: value is None or not math.isnan(value),
                           message="must be a number in the range [0, 1]")
  return flag


def start(argv):
  """What every launcher's main() does first.

  Refuses stray arguments, logs at INFO, sizes TensorFlow's thread pools to the CPUs the
  process may use, and routes gs:// to a local emulator when STORAGE_EMULATOR_HOST is set
  (both before TensorFlow runs anything).
  """
  refuse_stray_arguments(argv)
  logging.set_verbosity(logging.INFO)
  cpus.size_thread_pools()
  with user_errors_exit():
    emulator.route_gs_to_emulator()


def refuse_stray_arguments(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}. Settings are flags "
          "(--config.a.b=value); pass --helpshort to see them.")


def _fail(message, status=2):
  sys.stderr.write(f"\nkmodels: error: {message}\n")
  sys.exit(status)


def _config_argument(argv):
  """--config's value as given: FILE, or FILE:ARG (ml_collections passes ARG to get_config)."""
  for arg in argv:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return None


def _config_file(argv):
  argument = _config_argument(argv)
  return os.path.abspath(argument.split(":", 1)[0]) if argument else None


def _refuse_config_argument_of_another_kind(argv):
  argument = _config_argument(argv)
  if argument == "":
    _fail(_EMPTY.format(name="config"))
  if argument and os.path.isdir(_config_file(argv)):
    _fail(f"--config={argument} is a directory; pass a config file (such as "
          "configs/fashion_mnist_quickstart.py).")
  if argument and "://" in argument:
    _fail(f"--config={argument}: a config file is Python that ml_collections imports from "
          f"this machine's disk; copy it here first (`gsutil cp {argument} .`) and pass "
          "the local path.")
  if argument and not os.path.exists(_config_file(argv)):
    _fail(f"--config={argument}: no such file ({_config_file(argv)}; a relative path starts "
          "from the current directory). The shipped configs are in configs/.")


_MUST_RETURN = ("it must return an ml_collections.ConfigDict, as the shipped configs do "
                "(`config = base.get_config()`, then set keys; configs/base.py).")


def _config_file_problem(error, argv):
  """The message for a config file a launcher cannot load as a config (no get_config(), or
  one that takes no argument but was given one), or None. What a get_config() returned is
  _returned_another_kind's."""
  config_file, text = _config_file(argv), str(error)
  if not config_file:
    return None
  if "has no attribute 'get_config'" in text:
    return f"the config file {config_file} defines no get_config(); {_MUST_RETURN}"
  if "Error whilst parsing config file" in text:  # ml_collections' message holds a traceback
    cause = text.strip().splitlines()[-1]
    passed = _config_argument(argv).split(":", 1)[1:]
    return (f"could not load the config file {config_file}: {cause}" +
            (f" (ml_collections passes {passed[0]!r}, the text after ':' in --config, to "
             "get_config())" if passed else ""))
  return None


_NOT_LOADED = object()  # what _config_loaded_anew gives when it could not load the file


def _returned_another_kind(argv, value):
  """The message for a get_config() that returned something other than a ConfigDict, or
  None."""
  config_file = _config_file(argv)
  if not config_file or value is _NOT_LOADED or isinstance(value, ml_collections.ConfigDict):
    return None
  returned = "None" if value is None else f"a {type(value).__name__}"
  return f"get_config() of the config file {config_file} returned {returned}; {_MUST_RETURN}"


def _config_loaded_anew(argv):
  """What get_config() of --config's file returns, loaded again here: an override that
  failed on a value of another kind leaves the flag holding nothing. _NOT_LOADED if it
  fails."""
  config_file = _config_file(argv)
  if not config_file or "config" not in flags.FLAGS:  # a launcher without --config
    return _NOT_LOADED
  try:
    spec = importlib.util.spec_from_file_location("kmodels_config_check", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*_config_argument(argv).split(":", 1)[1:])
  except Exception:  # pylint: disable=broad-except  (reported as parsing reported it)
    return _NOT_LOADED


def _raised_by_config_file(error, argv):
  """The message for an exception the user's config file raised itself, or None.

  Such a bug must not be reported as a bad override: name the file, line and exception.
  """
  config_file = _config_file(argv)
  seen = error
  while seen is not None and config_file:
    frames = [
        f for f in traceback.extract_tb(seen.__traceback__)
        if os.path.abspath(f.filename) == config_file
    ]
    if frames and not isinstance(seen, flags.Error):
      frame = frames[-1]
      return (f"the config file {frame.filename} raised {type(seen).__name__}: {seen} "
              f"at line {frame.lineno} (`{frame.line}`), while building the config. That "
              "is a bug in the config file itself (not in an override): fix that line.")
    seen = seen.__cause__ or seen.__context__
  return None


def parse_flags(argv):
  """absl flag parsing that reports bad config files and overrides without a traceback.

  Pass as `app.run(main, flags_parser=parse_flags)`. ml_collections loads the config file
  and applies `--config.a.b=v` overrides while flags are parsed, so a typo in a key, a
  value of the wrong type, a missing file, a syntax error in it, or a bug in its
  get_config() all surface here.
  """
  _refuse_config_argument_of_another_kind(argv)
  try:
    remaining = flags.FLAGS(argv)
    for name in flags.FLAGS:
      # A config that failed to load is a proxy raising on first attribute access; touch
      # one here so its error is reported like the others, not deep inside training.
      getattr(flags.FLAGS[name].value, "keys", None)
  except Exception as e:  # pylint: disable=broad-except  (any exception of the user's file)
    problem = (_raised_by_config_file(e, argv) or _config_file_problem(e, argv) or
               _returned_another_kind(argv, _config_loaded_anew(argv)))
    if problem:
      _fail(problem)
    if isinstance(e, _CONFIG_ERRORS):
      _fail(_flag_error_message(e))
    raise  # kmodels' own bug: keep the traceback
  if "config" in flags.FLAGS:
    problem = _returned_another_kind(argv, flags.FLAGS["config"].value)
    if problem:
      _fail(problem)
  _refuse_empty_values()
  return remaining


def _refuse_empty_values():
  """An empty value given to a launcher's flag (`--workdir=$DIR` with DIR unset) is a
  mistake, not a choice: an empty --workdir would fill the current directory."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    defined_by_absl = flags.FLAGS.find_module_defining_flag(name, "").startswith("absl.")
    if flag.present and flag.value in ("", []) and not defined_by_absl:
      _fail(_EMPTY.format(name=name))


_EMPTY = ("--{name} is empty (a shell variable that expanded to nothing?): give it a value, "
          "or leave the flag out for its default.")

# What bad flags, overrides and config files raise while they are parsed and loaded.
_CONFIG_ERRORS = (flags.Error, KeyError, AttributeError, OSError, SyntaxError, ImportError,
                  TypeError, ValueError)


def _flag_error_message(error):
  if isinstance(error, flags.Error):
    return f"{error}\nPass --helpshort to see the flags."
  if isinstance(error, (KeyError, AttributeError)):  # an override of a key the config lacks
    detail = error
    while isinstance(detail, BaseException) and detail.args:  # KeyError in AttributeError
      detail = detail.args[0]
    return (f"unknown config key in an override: {str(detail).replace(chr(10), '. ')}\n"
            "Overrides must name existing keys (see the config file); the config is locked. "
            "A model builder argument the config file does not set (model.*) goes in a "
            "config file of your own that imports the one you use and sets it.")
  return f"could not load the config: {type(error).__name__}: {error}"


@contextlib.contextmanager
def user_errors_exit():
  """Turns a UserError into its message on stderr and its exit status, without a traceback.

  2: a mistake in the input; 3: training diverged (kmodels.errors).
  """
  try:
    yield
  except UserError as e:
    logging.flush()
    _fail(e, e.exit_status)
