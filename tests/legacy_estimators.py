"""model_dirs as legacy tf.estimator users have them, made with plain TensorFlow 2.15.

Nothing here imports kmodels: these are the model_dirs `launch.migrate` must read whoever
wrote them. `python -m tests.legacy_estimators MODEL_DIR` writes the canonical one (a
DNNClassifier [128, 64] on a 784-value "pixels" feature, 10 classes) for tests that
migrate in a full-lane process; with `FEATURES.npy OUT.npy` after it, also the
Estimator's own predicted probabilities for those features. `python -m
tests.legacy_estimators wide_and_deep MODEL_DIR RECORDS` trains the wide & deep classifier
over tests/legacy_feature_columns.py (`wide_and_deep_plain`: without the normalized
"hours" column), exports it as the Estimator does, writes check tf.Examples to RECORDS and
prints the export's path; `canned SETTINGS_JSON MODEL_DIR RECORDS` the same for any
canned_over_columns(**settings).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf


def _data(key, shape, n_classes, examples=256, seed=0):
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((examples, *shape)).astype(np.float32)
  # Labels that depend on the features, so training moves every weight.
  labels = (np.abs(features.reshape(examples, -1).sum(axis=1) * 3).astype(int) % n_classes)

  def input_fn():
    return tf.data.Dataset.from_tensor_slices(({key: features}, labels)).repeat().batch(32)

  return input_fn


def dnn_classifier(model_dir,
                   hidden_units=(128, 64),
                   activation="relu",
                   batch_norm=False,
                   dropout=None,
                   n_classes=10,
                   key="pixels",
                   shape=(784,),
                   steps=40):
  """Trains a canned DNNClassifier `steps` steps in `model_dir`."""
  column = tf.feature_column.numeric_column(key, shape=shape)
  estimator = tf.estimator.DNNClassifier(hidden_units=list(hidden_units),
                                         feature_columns=[column],
                                         n_classes=n_classes,
                                         activation_fn=getattr(tf.nn, activation),
                                         batch_norm=batch_norm,
                                         dropout=dropout,
                                         model_dir=model_dir,
                                         config=tf.estimator.RunConfig(tf_random_seed=1))
  estimator.train(_data(key, shape, n_classes), steps=steps)
  return estimator


def linear_combined_classifier(model_dir):
  column = tf.feature_column.numeric_column("x", shape=(4,))
  estimator = tf.estimator.DNNLinearCombinedClassifier(linear_feature_columns=[column],
                                                       dnn_feature_columns=[column],
                                                       dnn_hidden_units=[8],
                                                       model_dir=model_dir)
  estimator.train(_data("x", (4,), 2), steps=5)


def embedding_dnn_classifier(model_dir):
  words = tf.feature_column.categorical_column_with_identity("word", num_buckets=20)
  column = tf.feature_column.embedding_column(words, dimension=4)
  estimator = tf.estimator.DNNClassifier(hidden_units=[8],
                                         feature_columns=[column],
                                         model_dir=model_dir)
  ids = np.arange(64).reshape(64, 1) % 20

  def input_fn():
    return tf.data.Dataset.from_tensor_slices(({"word": ids}, ids[:, 0] % 2)).repeat().batch(8)

  estimator.train(input_fn, steps=5)


def custom_model_fn_estimator(model_dir):

  def model_fn(features, labels, mode):
    logits = tf.compat.v1.layers.dense(features["x"], 3, name="my_logits")
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

  tf.estimator.Estimator(model_fn, model_dir=model_dir).train(_data("x", (4,), 3), steps=5)


def boosted_trees_model_dir(model_dir):
  """A model_dir in the form a BoostedTreesClassifier saved: its tree ensemble under
  "boosted_trees:0_stamp" / "boosted_trees:0_serialized" (the names TF's tree ensemble
  saveable gives them) beside global_step. TF 2.15 has neither the BoostedTrees Estimators
  nor their kernels to train one, so SaveV2 writes those tensors; such model_dirs are what
  their users hold."""
  os.makedirs(model_dir, exist_ok=True)
  prefix = os.path.join(model_dir, "model.ckpt-3")
  tf.raw_ops.SaveV2(
      prefix=prefix,
      tensor_names=["boosted_trees:0_serialized", "boosted_trees:0_stamp", "global_step"],
      shape_and_slices=["", "", ""],
      tensors=[
          tf.constant(b""),  # a serialized TreeEnsemble proto of no trees yet
          tf.constant(0, tf.int64),
          tf.constant(3, tf.int64)
      ])
  tf.compat.v1.train.update_checkpoint_state(model_dir, prefix)


def model_to_estimator(model_dir, json_path):
  """A Keras model moved into an Estimator and trained there; its to_json() in json_path."""
  inputs = tf.keras.Input(shape=(6,), name="features")
  hidden = tf.keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
  outputs = tf.keras.layers.Dense(3, activation="softmax", name="scores")(hidden)
  model = tf.keras.Model(inputs, outputs, name="legacy_keras")
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
  with open(json_path, "w") as f:
    f.write(model.to_json())
  estimator = tf.keras.estimator.model_to_estimator(keras_model=model, model_dir=model_dir)
  estimator.train(_data("features", (6,), 3), steps=20)
  return estimator


def canned_over_columns(model_dir,
                        kind,
                        n_classes,
                        steps=30,
                        regressor=False,
                        label_vocabulary=None,
                        weight_column=None,
                        normalized_hours=True,
                        sparse_combiner="sum"):
  """A Linear, DNN, DNNLinearCombined or Baseline classifier (regressor: n_classes is its
  label_dimension) over the columns of tests/legacy_feature_columns.py, trained on
  tf.Examples (weighted by their "weight" feature if weight_column), with its own
  export_saved_model (a parsing receiver, as TF Serving users have it). Without
  normalized_hours, the "hours" column (the one with a normalizer_fn) is left out;
  sparse_combiner is the linear part's. Returns
  (estimator, export dir)."""
  from tests import legacy_feature_columns as columns  # pylint: disable=g-import-not-at-top
  linear, dnn = columns.linear_feature_columns(), columns.dnn_feature_columns()
  if not normalized_hours:
    linear, dnn = ([c for c in part if c.name != "hours"] for part in (linear, dnn))
  network = {
      "linear": "Linear",
      "dnn": "DNN",
      "wide_and_deep": "DNNLinearCombined",
      "baseline": "Baseline"
  }[kind]
  estimator_class = getattr(tf.estimator, network + ("Regressor" if regressor else "Classifier"))
  common = dict(model_dir=model_dir,
                config=tf.estimator.RunConfig(tf_random_seed=1),
                weight_column=weight_column)
  common.update(
      dict(label_dimension=n_classes
          ) if regressor else dict(n_classes=n_classes, label_vocabulary=label_vocabulary))
  if kind in ("linear", "baseline"):
    estimator = estimator_class(linear, sparse_combiner=sparse_combiner, **
                                common) if (kind == "linear") else estimator_class(**common)
  elif kind == "dnn":
    estimator = estimator_class([8, 4], dnn, dropout=0.1, **common)
  else:
    estimator = estimator_class(linear_feature_columns=linear,
                                dnn_feature_columns=dnn,
                                dnn_hidden_units=[8, 4],
                                batch_norm=True,
                                linear_sparse_combiner=sparse_combiner,
                                **common)
  # A Baseline reads only the batch size, from its one feature here: with several, its
  # size checks make the bias' initializer wait for the input iterator (a TF 2.15 bug).
  spec = tf.feature_column.make_parse_example_spec(
      linear + dnn if kind == "wide_and_deep" else dnn if kind == "dnn" else linear if kind ==
      "linear" else linear[:1])
  examples = column_examples(256, n_classes)

  def labelled(batch):
    features, labels = _parsed_with_labels(batch, spec, weight_column)
    if regressor:  # label_dimension values per example, from the class label
      return features, tf.tile(tf.cast(labels, tf.float32), [1, n_classes])
    if label_vocabulary:
      return features, tf.gather(tf.constant(label_vocabulary), labels)
    return features, labels

  def input_fn():
    return tf.data.Dataset.from_tensor_slices(examples).repeat().batch(32).map(labelled)

  estimator.train(input_fn, steps=steps)
  export = estimator.export_saved_model(
      os.path.join(model_dir, "export"),
      tf.estimator.export.build_parsing_serving_input_receiver_fn(spec))
  return estimator, export.decode()


def _parsed_with_labels(batch, spec, weight_column=None):
  extra = {"label": tf.io.FixedLenFeature([1], tf.int64)}
  if weight_column:
    extra[weight_column] = tf.io.FixedLenFeature([1], tf.float32)
  features = tf.io.parse_example(batch, {**spec, **extra})
  return features, features.pop("label")


def column_examples(count, n_classes, seed=0):
  """Serialized tf.Examples for the columns above, labels that depend on them."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(count):
    age = float(rng.uniform(10, 80))
    color = str(rng.choice(["red", "green", "blue", "pink"]))
    feature = {
        "age":
            tf.train.Feature(float_list=tf.train.FloatList(value=[age])),
        "hours":
            tf.train.Feature(float_list=tf.train.FloatList(value=rng.uniform(0, 60, 2))),
        "color":
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[color.encode()])),
        "city":
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"c{rng.integers(30)}".encode()])
                            ),
        "day":
            tf.train.Feature(int64_list=tf.train.Int64List(value=[rng.integers(7)])),
        "tags":
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"c"][:1 + i % 2])),
        "tag_weight":
            tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, 2.0][:1 + i % 2])),
        "home":
            tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[rng.choice([b"fr", b"de", b"jp", b"br", b"us"])])),
        "work":
            tf.train.Feature(bytes_list=tf.train.BytesList(
                value=list(rng.choice([b"fr", b"de", b"xx"], size=1 + i % 2)))),
        "weight":
            tf.train.Feature(float_list=tf.train.FloatList(value=[1.0 + i % 3])),
        "label":
            tf.train.Feature(int64_list=tf.train.Int64List(
                value=[(int(age > 40) + int(color == "red") + i % 2) % n_classes]))
    }
    examples.append(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return examples


def predict(estimator, key, features, output="probabilities"):
  """The Estimator's own predict() on `features` (one array per example, stacked)."""

  def input_fn():
    return tf.data.Dataset.from_tensor_slices({key: features}).batch(64)

  return np.stack([prediction[output] for prediction in estimator.predict(input_fn)])


def numeric_examples(key, features):
  """Serialized tf.Examples of one float feature `key`, one per row of `features`."""
  return [
      tf.train.Example(features=tf.train.Features(
          feature={key: tf.train.Feature(float_list=tf.train.FloatList(
              value=row.ravel()))})).SerializeToString() for row in features
  ]


def export_parsing(estimator, key, shape):
  """The Estimator's export_saved_model with a parsing receiver of its numeric column."""
  spec = tf.feature_column.make_parse_example_spec(
      [tf.feature_column.numeric_column(key, shape=shape)])
  return estimator.export_saved_model(
      os.path.join(estimator.model_dir, "export"),
      tf.estimator.export.build_parsing_serving_input_receiver_fn(spec)).decode()


def write_records(path, examples):
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example)


def main():
  if sys.argv[1].startswith("wide_and_deep"):  # MODEL_DIR RECORDS: the model and examples
    _, export = canned_over_columns(sys.argv[2],
                                    "wide_and_deep",
                                    3,
                                    normalized_hours=sys.argv[1] != "wide_and_deep_plain")
    write_records(sys.argv[3], column_examples(64, 3, seed=5))
    print(json.dumps({"export": export}))
    return
  if sys.argv[1] == "canned":  # SETTINGS_JSON MODEL_DIR RECORDS: canned_over_columns(**)
    settings = json.loads(sys.argv[2])
    _, export = canned_over_columns(sys.argv[3], **settings)
    write_records(sys.argv[4], column_examples(64, max(settings["n_classes"], 2), seed=5))
    print(json.dumps({"export": export}))
    return
  estimator = dnn_classifier(sys.argv[1])
  if len(sys.argv) == 4:  # FEATURES.npy OUT.npy: the Estimator's own predict() on them
    np.save(sys.argv[3], predict(estimator, "pixels", np.load(sys.argv[2])))
  print(json.dumps({"model_dir": os.path.abspath(sys.argv[1]), "tensorflow": tf.__version__}))


if __name__ == "__main__":
  main()
