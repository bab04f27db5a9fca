"""tf.estimator model_dirs to Keras models that serve on current TensorFlow, proven equal.

TensorFlow 2.16 removed tf.estimator, which freezes every model_dir on TF <= 2.15. This
module reads one (its checkpoint's variables, and graph.pbtxt for what the variables do not
say), rebuilds the same network in Keras, and proves the two equal every time: the
Estimator's own `predict` and the Keras model run on the same inputs, and a migration whose
probabilities differ by more than MAX_DIFFERENCE is refused.

What it reads (kmodels.legacy.estimator_reading does the reading):
- a canned DNNClassifier, whoever trained it;
- a model_to_estimator model_dir (Keras weights under their own names), given the Keras
  model it started from (--keras_model, or the config of a kmodels workdir);
- a kmodels workdir of trainer estimator or keras_estimator, whose model card adds the class
  names and the image preprocessing, so the export also takes uint8 images.

Outputs in the output directory (local or gs://): keras/ (the Keras SavedModel),
weights.h5, export/ (serving signatures), migration.json (what was read and the proof),
proof.npz (the inputs and both sides' outputs, to re-check on any TensorFlow), and for a
kmodels run its config.json (so `launch.predict --model=OUT --split=...` works).
"""

import io
import time
from typing import Optional

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import data, reporting, serving, storage
from kmodels.errors import UserError
from kmodels.legacy import estimator_reading, feature_columns

MAX_DIFFERENCE = 1e-5  # max |p_estimator - p_keras| over every probability checked
RANDOM_CHECK_EXAMPLES = 512
_PREDICT_BATCH = 256


class MigrationNotEqual(UserError):
  """The Keras model's outputs differ from the Estimator's beyond MAX_DIFFERENCE."""


def migrate(estimator_dir: str,
            output_dir: str,
            *,
            checkpoint: Optional[str] = None,
            check_data: Optional[str] = None,
            overrides: Optional[estimator_reading.Overrides] = None) -> dict:
  """Migrates the model_dir (or kmodels workdir) `estimator_dir` into `output_dir`.

  Args:
    estimator_dir: an Estimator's model_dir, or a kmodels workdir of an Estimator trainer.
    output_dir: where the Keras model, export, migration.json and proof.npz go.
    checkpoint: a checkpoint path; default the model_dir's latest.
    check_data: inputs for the proof: a .npz of features (by the feature key, or its only
      array; labels under "labels" or "y"), a tfds split of a kmodels run's dataset, or None
      (a kmodels run: its eval split; otherwise RANDOM_CHECK_EXAMPLES standard-normal inputs).
    overrides: estimator_reading.Overrides for what graph.pbtxt lacks or gets wrong.

  Returns:
    The migration record (also written as migration.json).
  """
  estimator_reading.check_estimator_available()
  source = estimator_reading.read(estimator_dir, checkpoint, overrides)
  logging.info("Read %s", source.summary())
  features, labels, check_description = _check_inputs(source, check_data)
  keras_model, proof = prove_equal(source, features, labels)
  arrays = proof.pop("_arrays")
  record = dict(source.record(), check_data=check_description, proof=proof)
  storage.makedirs(output_dir)
  reporting.write_json(storage.join(output_dir, "migration.json"), record)
  _write_proof_arrays(storage.join(output_dir, "proof.npz"), features, arrays)
  if not proof["equal"]:
    raise MigrationNotEqual(
        f"The Keras model does not reproduce the Estimator: max probability difference "
        f"{proof['max_abs_difference']:.3g} > {MAX_DIFFERENCE:g} over {len(features)} "
        f"inputs. Nothing was exported; {storage.join(output_dir, 'migration.json')} has what "
        "was read (check --activation, --feature_key, --input_shape).")
  _save_keras(keras_model, output_dir)
  export_for_serving(source, keras_model, storage.join(output_dir, "export"))
  if source.kmodels_config is not None:  # `launch.predict --split` reads the run's dataset
    reporting.write_json(storage.join(output_dir, "config.json"), source.kmodels_config.to_dict())
  return record


def prove_equal(source, features, labels=None):
  """Runs the Estimator's predict and the Keras model on `features`; compares them.

  Returns (the Keras model, the proof). The Keras model is built after the Estimator has
  predicted: building an Estimator's graph invalidates Keras models made before it.
  """
  started = time.perf_counter()
  expected = estimator_reading.estimator_outputs(source, features)
  estimator_seconds = time.perf_counter() - started
  tf.keras.backend.clear_session()
  keras_model = source.build_keras_model()
  started = time.perf_counter()
  actual = keras_model.predict(features, batch_size=_PREDICT_BATCH, verbose=0)
  keras_seconds = time.perf_counter() - started
  difference = float(np.max(np.abs(expected - actual))) if len(features) else 0.0
  agree = np.argmax(expected, -1) == np.argmax(actual, -1)
  proof = {
      "examples": len(features),
      "max_abs_difference": difference,
      "tolerance": MAX_DIFFERENCE,
      "equal": difference <= MAX_DIFFERENCE,
      "class_agreement": float(np.mean(agree)) if len(features) else 1.0,
      "parameters": keras_model.count_params(),
      "estimator_predict_images_per_second": len(features) / estimator_seconds,
      "keras_predict_images_per_second": len(features) / keras_seconds,
      "_arrays": {
          "estimator_outputs": expected,
          "keras_outputs": actual
      }
  }
  if labels is not None:
    proof["estimator_accuracy"] = float(np.mean(np.argmax(expected, -1) == labels))
    proof["keras_accuracy"] = float(np.mean(np.argmax(actual, -1) == labels))
  logging.info(
      "Proof over %d inputs: max |difference| %.3g (tolerance %g), classes agree "
      "on %.2f %%.", len(features), difference, MAX_DIFFERENCE, 100 * proof["class_agreement"])
  return keras_model, proof


def _check_inputs(source, check_data):
  """(features, labels or None, description) for the proof."""
  if check_data and check_data.endswith(".npz"):
    return _npz_inputs(source, check_data)
  if source.kmodels_config is not None:
    return _split_inputs(source, check_data or source.kmodels_config.dataset.eval_split)
  if check_data:
    raise UserError(f"--check_data={check_data}: a tfds split needs a kmodels workdir (its "
                    "config names the dataset); for any other model_dir pass a .npz of "
                    f"features under the key {source.feature_key!r}.")
  features = np.random.default_rng(0).standard_normal(
      (RANDOM_CHECK_EXAMPLES, *source.input_shape)).astype(np.float32)
  return features, None, f"{RANDOM_CHECK_EXAMPLES} standard-normal inputs (seed 0)"


def _npz_inputs(source, path):
  if not storage.exists(path):
    raise UserError(f"--check_data={path}: no such file.")
  with np.load(io.BytesIO(tf.io.gfile.GFile(path, "rb").read())) as arrays:
    names = arrays.files
    key = source.feature_key if source.feature_key in names else (
        names[0] if len([n for n in names if n not in ("labels", "y")]) == 1 else None)
    if key is None:
      raise UserError(f"--check_data={path} holds {names}; name the features "
                      f"{source.feature_key!r} (the feature key) or keep one array.")
    features = arrays[key].astype(np.float32)
    labels = next((arrays[n] for n in ("labels", "y") if n in names), None)
  expected = tuple(source.input_shape)
  if features.shape[1:] != expected:
    raise UserError(f"--check_data={path}: features of shape {features.shape[1:]} per "
                    f"example; the model takes {expected}.")
  return features, labels, f"{path} ({len(features)} examples)"


def _split_inputs(source, split):
  config = source.kmodels_config
  datasets = data.load_split(config, split, "--check_data")
  features, labels = [], []
  for images, batch_labels in datasets.eval:
    features.append(images.numpy())
    labels.append(batch_labels.numpy())
  return (np.concatenate(features).astype(np.float32), np.concatenate(labels),
          f"{config.dataset.name} split {split!r}")


def _write_proof_arrays(path, features, arrays):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, features=features, **arrays)
  storage.write_atomic(path, buffer.getvalue())


def _save_keras(model, output_dir):
  model.save(storage.join(output_dir, "keras"), save_format="tf", include_optimizer=False)
  with storage.local_copy_for_writing(storage.join(output_dir, "weights.h5")) as path:
    model.save_weights(path)


def _tf_example_signatures(source, model):
  """A canned DNNClassifier export's signatures over serialized tf.Examples (predict,
  classification, and regression for two classes), so its TF Serving clients keep working;
  its serving_default stays the feature tensor's (kmodels' exports have always had it)."""
  if not isinstance(source, estimator_reading.DnnSource):
    return {}
  logits = tf.keras.Model(model.inputs, model.get_layer("logits").output)
  head = feature_columns.ClassificationHead(source.n_classes)  # classes "0".."n-1", as it
  spec = {source.feature_key: tf.io.FixedLenFeature(source.input_shape, tf.float32)}

  def predict_outputs(serialized):
    features = tf.io.parse_example(serialized, spec)[source.feature_key]
    return head.outputs(logits(features, training=False))

  signatures = feature_columns.example_signatures(head, predict_outputs)
  del signatures["serving_default"]
  return signatures


def export_for_serving(source, model, export_root):
  """The next version under `export_root`: a SavedModel whose serving_default takes the
  Estimator's own feature by its key.

  Outputs: probabilities (float32), class_id (int64), and class_name where the class names
  are known. A kmodels image run also gets serving_images / serving_float / serving_bytes,
  the uint8, 0-255 float and encoded-image signatures of every kmodels export.
  """
  label_names = source.label_names()
  shape = [None, *source.input_shape]

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=source.feature_key)])
  def serving_default(features):
    probabilities = source.probabilities(model(features, training=False))
    class_id = tf.argmax(probabilities, axis=-1)
    outputs = {"probabilities": probabilities, "class_id": class_id}
    if label_names:
      outputs["class_name"] = tf.gather(tf.constant(label_names), class_id)
    return outputs

  functions = {**_tf_example_signatures(source, model), "serving_default": serving_default}
  if source.image_preprocessing_known():
    keras_scores = serving.keras_scores(model)
    images = serving.signatures(lambda pixels: source.probabilities(keras_scores(pixels)),
                                source.input_shape,
                                label_names,
                                logits=False)
    functions.update(serving_images=images.pop("serving_default"), **images)
  with serving.new_version(export_root) as slot:
    model.save(slot.path, save_format="tf", include_optimizer=False, signatures=functions)
    reporting.write_json(storage.join(slot.path, serving.MODEL_CARD),
                         dict(source.model_card(sorted(functions)), version=slot.version))
  logging.info("Exported %s with signatures %s.", slot.path, ", ".join(sorted(functions)))
