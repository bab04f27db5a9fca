r"""Migrates a tf.estimator model_dir to Keras, proves it equal, exports it for serving.

  python -m launch.migrate --estimator_dir=legacy/model_dir --workdir=runs/migrated
  python -m launch.migrate --estimator_dir=runs/compare/estimator --workdir=runs/migrated \
      --check_data=test                         # a kmodels Estimator run: its test split
  python -m launch.migrate --estimator_dir=m2e_dir --keras_model=model.json --workdir=OUT
  python -m launch.migrate --estimator_dir=wide_deep_dir --feature_columns=columns.py \
      --workdir=OUT                             # canned classifiers over feature columns

Reads a canned DNNClassifier's checkpoint (the latest, or --checkpoint) and graph.pbtxt,
a model_to_estimator model_dir with the Keras model it was given (--keras_model), or a
kmodels workdir of trainer estimator/keras_estimator. Runs the Estimator's predict and the
Keras model on the same inputs (--check_data: a .npz, a split of a kmodels run's dataset;
default: that run's eval split, or 512 random inputs) and refuses (exit 2, nothing
exported) when the probabilities differ by more than 1e-5. Writes into --workdir:
keras/ (Keras SavedModel), weights.h5, export/ (serving_default takes the Estimator's
feature by its key), migration.json and proof.npz. Runs on the full lane (TF 2.15); the
export serves on any TensorFlow 2.

A Linear, DNN, DNNLinearCombined or Baseline classifier or regressor over feature columns
(a Linear or wide & deep model_dir is recognised by its variables) takes its columns from
the Estimator's own export (the newest under MODEL_DIR/export, or --estimator_export=DIR)
or from --feature_columns (a Python file defining linear_feature_columns() and/or
dnn_feature_columns(), the columns the Estimator was given, and optionally
label_vocabulary()); a Baseline needs none. It is proven on tf.Examples
(--check_data=FILE.tfrecord, or ones generated from the columns) and exported with the
Estimator's own signatures (classifiers: serving_default, classification, predict, and
regression for two classes; regressors: serving_default, regression, predict) over
serialized tf.Examples: TF Serving clients do not change. BoostedTrees model_dirs are
refused with the route to take.
"""

from absl import app
from absl import flags

from kmodels import storage
from kmodels.errors import UserError
from kmodels.legacy import estimator_reading, feature_columns, migration
from launch import common

_ESTIMATOR_DIR = flags.DEFINE_string("estimator_dir", None,
                                     "The Estimator's model_dir, or a kmodels workdir.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the migrated model goes.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint path; default: latest.")
_CHECK_DATA = flags.DEFINE_string(
    "check_data", None, "Proof inputs: a .npz of features, or a tfds split of a "
    "kmodels run's dataset (e.g. test[:1000]).")
_ACTIVATION = flags.DEFINE_string(
    "activation", None, "Hidden-layer activation (tf.nn name), "
    "where graph.pbtxt is missing or wrong.")
_FEATURE_KEY = flags.DEFINE_string("feature_key", None, "The numeric_column's key.")
_INPUT_SHAPE = flags.DEFINE_string("input_shape", None, "The feature's shape, e.g. 28,28.")
_KERAS_MODEL = flags.DEFINE_string(
    "keras_model", None, "model_to_estimator dirs: the Keras model it was given "
    "(.keras, .h5, SavedModel dir or to_json() text).")
_FEATURE_COLUMNS = flags.DEFINE_string(
    "feature_columns", None, "A Python file defining linear_feature_columns() and/or "
    "dnn_feature_columns(): the columns a canned classifier over feature columns was given.")
_HEAD = flags.DEFINE_enum("head", None, ["classifier", "regressor"],
                          "--feature_columns without graph.pbtxt: the Estimator's head.")
_SPARSE_COMBINER = flags.DEFINE_enum(
    "sparse_combiner", None, ["sum", "mean", "sqrtn"],
    "The linear part's sparse_combiner; default: the export's, else sum.")
_ESTIMATOR_EXPORT = flags.DEFINE_string(
    "estimator_export", None, "The Estimator's own export_saved_model (tf.Example parsing "
    "receiver) whose graph gives the feature columns back; default: the newest under "
    "MODEL_DIR/export.")
flags.mark_flags_as_required(["estimator_dir", "workdir"])


def _shape(text):
  if not text:
    return None
  try:
    return tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
  except ValueError:
    raise UserError(f"--input_shape={text}: expected sizes like 28,28 or 784.") from None


def _check_storage():
  """Every path flag on a bucket: one line now if it cannot be used, not a retry later."""
  for flag in (_ESTIMATOR_DIR, _WORKDIR, _CHECKPOINT, _CHECK_DATA, _KERAS_MODEL, _FEATURE_COLUMNS,
               _ESTIMATOR_EXPORT):
    if flag.value:
      storage.check_reachable(flag.value, f"--{flag.name}")


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    estimator_reading.check_estimator_available()
    _check_storage()
    over_columns = (_FEATURE_COLUMNS.value or _ESTIMATOR_EXPORT.value or
                    feature_columns.needs_no_columns(_ESTIMATOR_DIR.value, _CHECKPOINT.value))
  if over_columns:
    _migrate_over_feature_columns()
    return
  with common.user_errors_exit():
    overrides = estimator_reading.Overrides(activation=_ACTIVATION.value,
                                            feature_key=_FEATURE_KEY.value,
                                            input_shape=_shape(_INPUT_SHAPE.value),
                                            keras_model=_KERAS_MODEL.value)
    record = migration.migrate(_ESTIMATOR_DIR.value,
                               _WORKDIR.value,
                               checkpoint=_CHECKPOINT.value,
                               check_data=_CHECK_DATA.value,
                               overrides=overrides)
  proof = record["proof"]
  accuracy = ""
  if "keras_accuracy" in proof:
    accuracy = (f"; accuracy {100 * proof['estimator_accuracy']:.2f} % (Estimator) vs "
                f"{100 * proof['keras_accuracy']:.2f} % (Keras)")
  print(
      f"Migrated {record['kind']} (step {record['step']}): max probability difference "
      f"{proof['max_abs_difference']:.2g} <= {proof['tolerance']:g} over "
      f"{proof['examples']} inputs ({record['check_data']}), classes agree on "
      f"{100 * proof['class_agreement']:.2f} %{accuracy}.\nPredict images/s: Estimator "
      f"{proof['estimator_predict_images_per_second']:.0f}, Keras "
      f"{proof['keras_predict_images_per_second']:.0f}.\nWritten: keras/, weights.h5, "
      f"export/, migration.json, proof.npz in {_WORKDIR.value}",
      flush=True)


def _migrate_over_feature_columns():
  with common.user_errors_exit():
    record = feature_columns.migrate(_ESTIMATOR_DIR.value,
                                     _WORKDIR.value,
                                     _FEATURE_COLUMNS.value,
                                     checkpoint=_CHECKPOINT.value,
                                     sparse_combiner=_SPARSE_COMBINER.value,
                                     check_data=_CHECK_DATA.value,
                                     head=_HEAD.value,
                                     estimator_export=_ESTIMATOR_EXPORT.value)
  proof = record["proof"]
  accuracy = ""
  if "keras_accuracy" in proof:
    accuracy = (f"; accuracy {100 * proof['estimator_accuracy']:.2f} % (Estimator) vs "
                f"{100 * proof['keras_accuracy']:.2f} % (Keras)")
  print(
      f"Migrated {record['kind']} (step {record['step']}) over "
      f"{len(record['linear_columns']) + len(record['dnn_columns'])} feature columns "
      f"(from {record['columns_from']}): max "
      f"difference {proof['max_abs_difference']:.2g} <= {proof['tolerance']:g} over "
      f"{proof['examples']} tf.Examples ({record['check_data']}){accuracy}.\nSignatures "
      f"{', '.join(record['signatures'])} take serialized tf.Examples, as the Estimator's "
      f"export did. Written: export/1, migration.json in {_WORKDIR.value}",
      flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
