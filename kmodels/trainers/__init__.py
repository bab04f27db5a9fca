"""The trainers: one module each, and one table that says what each one is and supports.

  fit              Keras model.fit with kmodels' callbacks (fit.py);
  custom_loop      a GradientTape step under strategy.run (custom_loop.py);
  estimator        a canned tf.estimator classifier: DNN, Linear or wide & deep (estimator.py);
  keras_estimator  a registered Keras model through model_to_estimator (estimator.py).

A row holds the trainer's train function (Run -> Outcome, see run.py) and what differs
between trainers. Validation (strategies, precisions), precision=auto, the benchmark,
compare, launch.evaluate (checkpoint layout), the model card and the README's trainer table
all read the row; code outside this package never compares trainer names
(tests/validation_test.py). Adding a trainer: its module here, one row, and the tests named
in README "Extending kmodels".
"""

import typing

from kmodels import checkpoints, distribute, precision, serving, storage
from kmodels.trainers import custom_loop, estimator, fit, keras

ALL_STRATEGIES = tuple(distribute.STRATEGIES)  # owned by distribute
ALL_PRECISIONS = precision.PRECISIONS  # owned by precision


class Trainer(typing.NamedTuple):
  name: str
  train: typing.Callable  # Run -> Outcome (kmodels.trainers.run)
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
  # Settings this trainer cannot apply, each with the value that means "off": validation
  # refuses any other value, naming `unsupported_why`, so no setting is a silent no-op.
  unsupported: typing.Tuple[typing.Tuple[str, typing.Any], ...] = ()
  unsupported_why: str = ""

  @property
  def benchmarkable(self):
    return self.benchmark_loop is not None


_ESTIMATOR_STRATEGIES = ("auto", "default", "one_device", "mirrored")
_ESTIMATOR_PRECISION = " (Estimators predate Keras mixed precision)"
# What the Keras trainers do that an Estimator cannot: its TF1 optimizer, loss and model,
# integer labels, and its own checkpoint and summary schedule.
_ESTIMATOR_UNSUPPORTED = (("train.label_smoothing", 0.0), ("train.sync_batchnorm", False),
                          ("train.accumulate_steps", 1), ("train.checkpoint_every_steps", None),
                          ("train.profile_steps", None), ("train.optimizer.scale_by_batch", False),
                          ("train.optimizer.weight_decay",
                           0.0), ("train.optimizer.clip_global_norm",
                                  None), ("train.optimizer.ema_momentum",
                                          None), ("dataset.augment.mixup_alpha",
                                                  0.0), ("dataset.augment.cutmix_alpha", 0.0))
_ESTIMATOR_WHY = ("trains with TF1 optimizers, plain cross-entropy on integer labels and its "
                  "own checkpoint and summary schedule")

TABLE = {
    t.name: t for t in (
        Trainer("fit",
                keras.trainer(fit.train),
                "Keras model.fit with kmodels' callbacks",
                ALL_STRATEGIES,
                ALL_PRECISIONS,
                benchmark_loop="fit",
                estimator=False,
                registry_model=True,
                latest_checkpoints=checkpoints.BACKUP_CHIEF,
                jit_compile=True,
                finetunes=True),
        Trainer("custom_loop",
                keras.trainer(custom_loop.train),
                "a hand-written GradientTape step under strategy.run, the same callbacks",
                ALL_STRATEGIES,
                ALL_PRECISIONS,
                benchmark_loop="custom_loop",
                estimator=False,
                registry_model=True,
                best_checkpoint=True),
        Trainer("estimator",
                estimator.train,
                "a canned tf.estimator classifier on the pixels (estimator.canned: dnn, linear or "
                "dnn_linear_combined; hidden units from estimator.hidden_units)",
                _ESTIMATOR_STRATEGIES, ("auto", "float32"),
                benchmark_loop=None,
                estimator=True,
                registry_model=False,
                precision_note=_ESTIMATOR_PRECISION,
                unsupported=_ESTIMATOR_UNSUPPORTED,
                unsupported_why=_ESTIMATOR_WHY),
        Trainer("keras_estimator",
                estimator.train,
                "the registry's Keras model moved into an Estimator by model_to_estimator",
                _ESTIMATOR_STRATEGIES, ("auto", "float32"),
                benchmark_loop=None,
                estimator=True,
                registry_model=True,
                precision_note=_ESTIMATOR_PRECISION,
                unsupported=_ESTIMATOR_UNSUPPORTED,
                unsupported_why=_ESTIMATOR_WHY),
    )
}
NAMES = tuple(TABLE)


def is_estimator(name):
  return TABLE[name].estimator


def model_label(config):
  """The trained model's name for people: the registry's name, or (a trainer that builds
  its own network) the canned Estimator's, e.g. DNNClassifier[256]."""
  if TABLE[config.trainer].registry_model:
    return config.model.name
  return estimator.canned_label(config)


def benchmarkable():
  return tuple(t.name for t in TABLE.values() if t.benchmarkable)


def latest_checkpoints(config, checkpoints_dir):
  """The directory holding the newest checkpoint of config.trainer's run."""
  subdirectory = TABLE[config.trainer].latest_checkpoints
  return storage.join(checkpoints_dir, subdirectory) if subdirectory else checkpoints_dir


def markdown_table():
  """The README's trainer table (tests/validation_test.py keeps README in step with it)."""
  lines = [
      "| trainer | what it is | strategies | precisions | benchmark | lane |",
      "|---|---|---|---|---|---|"
  ]
  for t in TABLE.values():
    strategies = "all" if t.strategies == ALL_STRATEGIES else ", ".join(t.strategies)
    precisions = "all" if t.precisions == ALL_PRECISIONS else ", ".join(t.precisions)
    lines.append(f"| `{t.name}` | {t.summary} | {strategies} | {precisions} | "
                 f"{'yes' if t.benchmarkable else 'no'} | "
                 f"{'full (TF 2.15)' if t.estimator else 'both'} |")
  return "\n".join(lines)
