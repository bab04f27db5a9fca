"""What every launcher does around its one library call."""

import contextlib
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmodels import storage
from kmodels.errors import UserError


def define_config_and_workdir(config_help, workdir_help):
  """The --config (a locked config file with --config.a.b=v overrides) and --workdir flags."""
  config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, workdir_help)
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir


def start(argv):
  """What every launcher's main() does first.

  Refuses stray arguments, logs at INFO, and routes gs:// to a local emulator when
  STORAGE_EMULATOR_HOST is set (before TensorFlow first touches gs://).
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  with user_errors_exit():
    storage.route_gs_to_emulator()


def _fail(message, status=2):
  sys.stderr.write(f"\nkmodels: error: {message}\n")
  sys.exit(status)


def parse_flags(argv):
  """absl flag parsing that reports bad config files and overrides without a traceback.

  Pass as `app.run(main, flags_parser=parse_flags)`. ml_collections loads the config file
  and applies `--config.a.b=v` overrides while flags are parsed, so a typo in a key, a
  value of the wrong type, a missing file or a syntax error in it all surface here.
  """
  try:
    remaining = flags.FLAGS(argv)
    for name in flags.FLAGS:
      # A config that failed to load is a proxy raising on first attribute access; touch
      # one here so its error is reported like the others, not deep inside training.
      getattr(flags.FLAGS[name].value, "keys", None)
    return remaining
  except flags.Error as e:
    _fail(f"{e}\nPass --helpshort to see the flags.")
  except (KeyError, AttributeError) as e:  # an override of a key the config lacks
    detail = e
    while isinstance(detail, BaseException) and detail.args:  # KeyError inside AttributeError
      detail = detail.args[0]
    _fail(f"unknown config key in an override: {str(detail).replace(chr(10), '. ')}\n"
          "Overrides must name existing keys (see the config file); the config is locked. "
          "A model builder argument the config file does not set (model.*) goes in a "
          "config file of your own that imports the one you use and sets it.")
  except (OSError, SyntaxError, ImportError, TypeError, ValueError) as e:
    _fail(f"could not load the config: {type(e).__name__}: {e}")


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
