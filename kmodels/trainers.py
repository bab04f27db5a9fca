"""The trainers: one table that says what each one is and what it supports.

Validation (which strategy and precision a trainer takes), the benchmark (which trainers it
measures), compare (which paths need the full lane), precision=auto (Estimators train in
float32), evaluation (which runs it can rebuild) and the README's trainer table all read
it. Adding a trainer: a row here, its train function in kmodels.training, and the tests
named in README "Extending kmodels".
"""

import importlib
import typing

from kmodels import checkpoints, distribute, precision, storage

ALL_STRATEGIES = tuple(distribute.STRATEGIES)  # owned by distribute
ALL_PRECISIONS = precision.PRECISIONS  # owned by precision


class Trainer(typing.NamedTuple):
  name: str
  function: str  # its train function in kmodels.training: Run -> Outcome
  summary: str
  strategies: typing.Tuple[str, ...]
  precisions: typing.Tuple[str, ...]
  benchmark_loop: typing.Optional[str]  # launch.benchmark times its steps: "fit" or "custom_loop"
  estimator: bool  # a tf.estimator.Estimator: TF <= 2.15 (the full lane) only
  registry_model: bool  # trains config.model (the DNNClassifier builds its own network)
  latest_checkpoints: str = ""  # where under checkpoints/ its newest checkpoint is
  best_checkpoint: bool = False  # keeps checkpoints/best/ (launch.evaluate --checkpoint=best)
  jit_compile: bool = False  # config.xla compiles its whole train step (model.compile)
  finetunes: bool = False  # model.freeze_backbone_epochs (a callback that thaws mid-fit)
  precision_note: str = ""  # why the precisions are limited, for the refusal

  @property
  def benchmarkable(self):
    return self.benchmark_loop is not None

  def train(self, run):
    """Runs this trainer on a training.Run; returns a training.Outcome."""
    training = importlib.import_module("kmodels.training")  # imports this module
    return getattr(training, self.function)(run)


_ESTIMATOR_STRATEGIES = ("auto", "default", "one_device", "mirrored")
_ESTIMATOR_PRECISION = " (Estimators predate Keras mixed precision)"

TABLE = {t.name: t for t in (
    Trainer("fit", "train_with_fit", "Keras model.fit with kmodels' callbacks",
            ALL_STRATEGIES, ALL_PRECISIONS, benchmark_loop="fit", estimator=False,
            registry_model=True, latest_checkpoints=checkpoints.BACKUP_CHIEF, jit_compile=True,
            finetunes=True),
    Trainer("custom_loop", "train_with_custom_loop",
            "a hand-written GradientTape step under strategy.run, the same callbacks",
            ALL_STRATEGIES, ALL_PRECISIONS, benchmark_loop="custom_loop", estimator=False,
            registry_model=True, best_checkpoint=True),
    Trainer("estimator", "train_with_estimator",
            "tf.estimator.DNNClassifier (hidden units from estimator.hidden_units)",
            _ESTIMATOR_STRATEGIES, ("auto", "float32"), benchmark_loop=None, estimator=True,
            registry_model=False, precision_note=_ESTIMATOR_PRECISION),
    Trainer("keras_estimator", "train_with_estimator",
            "the registry's Keras model moved into an Estimator by model_to_estimator",
            _ESTIMATOR_STRATEGIES, ("auto", "float32"), benchmark_loop=None, estimator=True,
            registry_model=True, precision_note=_ESTIMATOR_PRECISION),
)}
NAMES = tuple(TABLE)


def is_estimator(name):
  return TABLE[name].estimator


def benchmarkable():
  return tuple(t.name for t in TABLE.values() if t.benchmarkable)


def latest_checkpoints(config, checkpoints_dir):
  """The directory holding the newest checkpoint of config.trainer's run."""
  subdirectory = TABLE[config.trainer].latest_checkpoints
  return storage.join(checkpoints_dir, subdirectory) if subdirectory else checkpoints_dir


def markdown_table():
  """The README's trainer table (tests/validation_test.py keeps README in step with it)."""
  lines = ["| trainer | what it is | strategies | precisions | benchmark | lane |",
           "|---|---|---|---|---|---|"]
  for t in TABLE.values():
    strategies = "all" if t.strategies == ALL_STRATEGIES else ", ".join(t.strategies)
    precisions = "all" if t.precisions == ALL_PRECISIONS else ", ".join(t.precisions)
    lines.append(f"| `{t.name}` | {t.summary} | {strategies} | {precisions} | "
                 f"{'yes' if t.benchmarkable else 'no'} | "
                 f"{'full (TF 2.15)' if t.estimator else 'both'} |")
  return "\n".join(lines)
