"""The trainers: one table that says what each one is and what it supports.

Validation (which strategy and precision a trainer takes), the benchmark (which trainers it
measures), compare (which paths need the full lane), precision=auto (Estimators train in
float32), evaluation (which runs it can rebuild) and the README's trainer table all read
it. Adding a trainer: a row here, its train function in kmodels.training, and the tests
named in README "Extending kmodels".
"""

import importlib
import typing

ALL_STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
ALL_PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


class Trainer(typing.NamedTuple):
  name: str
  function: str  # its train function in kmodels.training: Run -> Outcome
  summary: str
  strategies: typing.Tuple[str, ...]
  precisions: typing.Tuple[str, ...]
  benchmarkable: bool  # launch.benchmark can time its steps
  estimator: bool  # a tf.estimator.Estimator: TF <= 2.15 (the full lane) only
  precision_note: str = ""  # why the precisions are limited, for the refusal

  def train(self, run):
    """Runs this trainer on a training.Run; returns a training.Outcome."""
    training = importlib.import_module("kmodels.training")  # imports this module
    return getattr(training, self.function)(run)


_ESTIMATOR_STRATEGIES = ("auto", "default", "one_device", "mirrored")
_ESTIMATOR_PRECISION = " (Estimators predate Keras mixed precision)"

TABLE = {t.name: t for t in (
    Trainer("fit", "train_with_fit", "Keras model.fit with kmodels' callbacks",
            ALL_STRATEGIES, ALL_PRECISIONS, benchmarkable=True, estimator=False),
    Trainer("custom_loop", "train_with_custom_loop",
            "a hand-written GradientTape step under strategy.run, the same callbacks",
            ALL_STRATEGIES, ALL_PRECISIONS, benchmarkable=True, estimator=False),
    Trainer("estimator", "train_with_estimator",
            "tf.estimator.DNNClassifier (hidden units from estimator.hidden_units)",
            _ESTIMATOR_STRATEGIES, ("auto", "float32"), benchmarkable=False, estimator=True,
            precision_note=_ESTIMATOR_PRECISION),
    Trainer("keras_estimator", "train_with_estimator",
            "the registry's Keras model moved into an Estimator by model_to_estimator",
            _ESTIMATOR_STRATEGIES, ("auto", "float32"), benchmarkable=False, estimator=True,
            precision_note=_ESTIMATOR_PRECISION),
)}
NAMES = tuple(TABLE)


def is_estimator(name):
  return TABLE[name].estimator


def benchmarkable():
  return tuple(t.name for t in TABLE.values() if t.benchmarkable)


def markdown_table():
  """The README's trainer table (tests/trainers_test.py keeps README in step with it)."""
  lines = ["| trainer | what it is | strategies | precisions | benchmark | lane |",
           "|---|---|---|---|---|---|"]
  for t in TABLE.values():
    strategies = "all" if t.strategies == ALL_STRATEGIES else ", ".join(t.strategies)
    precisions = "all" if t.precisions == ALL_PRECISIONS else ", ".join(t.precisions)
    lines.append(f"| `{t.name}` | {t.summary} | {strategies} | {precisions} | "
                 f"{'yes' if t.benchmarkable else 'no'} | "
                 f"{'full (TF 2.15)' if t.estimator else 'both'} |")
  return "\n".join(lines)
