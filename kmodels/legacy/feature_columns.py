"""Canned Estimators over feature columns -> Keras, serving the Estimator's tf.Example API.

Who this is for: a Linear, DNN or wide & deep DNNLinearCombined classifier or regressor
trained over feature columns (vocabularies, hash buckets,
buckets, crosses, indicators, embeddings), exported with a parsing receiver and called by
TF Serving clients with serialized tf.Examples. TensorFlow 2.16 removed tf.estimator; the
Keras model made here runs on any TF 2 with Keras 2 (tf-keras), and its export keeps the
Estimator's signature names, input names and output keys, so those clients do not change.

The user's own column definitions are the source of what a checkpoint does not hold
(vocabularies, boundaries, hash sizes): a Python file (`launch.migrate
--feature_columns=FILE.py`) with `linear_feature_columns()` and/or
`dnn_feature_columns()`, as their training code had them, and `label_vocabulary()` if the
Estimator had one. The variables give the rest: hidden units, classes (or the label
dimension), the linear weights; graph.pbtxt gives the activation, the dropout, and whether
the head classifies (its class_ids op) or regresses (else --head says).

How each part becomes Keras, with the Estimator's own arithmetic:
- The DNN part: tf-keras' DenseFeatures over the same columns (the layer the Estimator's
  input layer is), then Dense -> activation -> (dropout) -> (batch norm) per hidden layer.
- The linear part: for a categorical column, the sum of its weights over the example's ids
  under `sparse_combiner` is what an embedding_column with those weights as its table and
  that combiner computes; for a dense column it is features @ weights. Plus the bias.
- The head: softmax over n logits, or for two classes the logistic of one logit; class
  names from the label vocabulary. A regression head's predictions are its logits.

Not yet: Baseline estimators, shared_embeddings, reading the columns from graph.pbtxt alone
(see BUILD_NOTES "Known limits").
"""

import dataclasses
import re
import tempfile
import time
import typing

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import checkpoints, data, reporting, serving, storage, trainers
from kmodels.errors import UserError, first_line
from kmodels.legacy import estimator_reading, export_columns

_LINEAR = "linear/linear_model/"
_DNN = "dnn/"
_DNN_INPUT = _DNN + "input_from_feature_columns/input_layer/"
CHECK_EXAMPLES = 256


@dataclasses.dataclass
class ColumnsSource:
  """A canned classifier over feature columns: what was read, from where."""
  checkpoint: str
  step: int
  linear_columns: list
  dnn_columns: list
  hidden_units: typing.List[int]
  n_classes: int  # a regressor: its label_dimension
  regressor: bool = False
  label_vocabulary: typing.Optional[typing.List[str]] = None
  activation: str = "relu"
  alpha: typing.Optional[float] = None
  dropout: typing.Optional[float] = None
  batch_norm: bool = False
  sparse_combiner: str = "sum"
  baseline: bool = False  # a Baseline estimator: its logits are one learned bias
  kmodels_config: typing.Any = None  # a kmodels run's config: its test split checks
  columns_from: str = "--feature_columns"  # where the columns came from, for the record

  @property
  def kind(self):
    if self.baseline:
      network = "Baseline"
    elif self.linear_columns and self.dnn_columns:
      network = "DNNLinearCombined"
    else:
      network = "Linear" if self.linear_columns else "DNN"
    return network + ("Regressor" if self.regressor else "Classifier")

  @property
  def units(self):
    return 1 if self.n_classes == 2 and not self.regressor else self.n_classes

  def head(self):
    return (RegressionHead(self.n_classes) if self.regressor else ClassificationHead(
        self.n_classes, self.label_vocabulary))

  def parse_spec(self):
    return tf.feature_column.make_parse_example_spec(self.linear_columns + self.dnn_columns)

  def record(self):
    return {
        "kind": self.kind,
        "checkpoint": self.checkpoint,
        "step": self.step,
        "n_classes": None if self.regressor else self.n_classes,
        "label_dimension": self.n_classes if self.regressor else None,
        "label_vocabulary": self.label_vocabulary,
        "hidden_units": self.hidden_units,
        "activation": self.activation,
        "alpha": self.alpha,
        "dropout": self.dropout,
        "batch_norm": self.batch_norm,
        "sparse_combiner": self.sparse_combiner,
        "linear_columns": [c.name for c in self.linear_columns],
        "dnn_columns": [c.name for c in self.dnn_columns],
        "columns_from": self.columns_from
    }

  @classmethod
  def from_record(cls, record, columns_file):
    """The source a migration.json describes, with the columns from `columns_file`: what
    rebuilds the migrated Keras model where tf.estimator is gone (to train it on)."""
    linear, dnn, _ = load_columns(columns_file) if columns_file else ([], [], None)
    by_name = {c.name: c for c in linear + dnn}
    missing = [n for n in record["linear_columns"] + record["dnn_columns"] if n not in by_name]
    if missing:
      raise UserError(f"{columns_file} defines no column named {', '.join(missing)}: pass the "
                      "columns file the model was migrated with.")
    regressor = record["label_dimension"] is not None
    return cls(checkpoint=record["checkpoint"],
               step=record["step"],
               linear_columns=[by_name[n] for n in record["linear_columns"]],
               dnn_columns=[by_name[n] for n in record["dnn_columns"]],
               hidden_units=record["hidden_units"],
               regressor=regressor,
               n_classes=record["label_dimension"] if regressor else record["n_classes"],
               label_vocabulary=record["label_vocabulary"],
               activation=record["activation"],
               alpha=record.get("alpha"),
               dropout=record["dropout"],
               batch_norm=record["batch_norm"],
               sparse_combiner=record["sparse_combiner"],
               baseline=record["kind"].startswith("Baseline"))

  def estimator(self, model_dir):
    """The same canned Estimator, to run its own predict from the checkpoint."""
    common = (dict(label_dimension=self.n_classes) if self.regressor else dict(
        n_classes=self.n_classes, label_vocabulary=self.label_vocabulary))
    common["model_dir"] = model_dir
    dnn = dict(hidden_units=self.hidden_units,
               activation_fn=self.activation_fn(),
               dropout=self.dropout,
               batch_norm=self.batch_norm)
    estimator_class = getattr(tf.estimator, self.kind)
    if self.baseline:
      return estimator_class(**common)
    if not self.dnn_columns:
      return estimator_class(self.linear_columns, sparse_combiner=self.sparse_combiner, **common)
    if not self.linear_columns:
      return estimator_class(feature_columns=self.dnn_columns, **dnn, **common)
    return estimator_class(linear_feature_columns=self.linear_columns,
                           dnn_feature_columns=self.dnn_columns,
                           dnn_hidden_units=dnn["hidden_units"],
                           dnn_activation_fn=dnn["activation_fn"],
                           dnn_dropout=self.dropout,
                           batch_norm=self.batch_norm,
                           linear_sparse_combiner=self.sparse_combiner,
                           **common)

  def activation_fn(self):
    return estimator_reading.activation_fn(self.activation, self.alpha)


def load_columns(path):
  """(linear columns, dnn columns, label vocabulary or None) from the user's Python file."""
  if not storage.exists(path) or storage.isdir(path):
    raise UserError(f"--feature_columns={path}: no such file (a .py file of the columns).")
  try:
    code = compile(storage.read_text(path), path, "exec")
    namespace = {"__name__": "estimator_feature_columns", "__file__": path}
    # In a graph, as under the Estimator: shared_embeddings refuses to be made eagerly.
    with tf.Graph().as_default():
      exec(code, namespace)  # pylint: disable=exec-used  (the user's own column definitions)
      linear, dnn, vocabulary = (list(namespace[name]()) if name in namespace else None
                                 for name in ("linear_feature_columns", "dnn_feature_columns",
                                              "label_vocabulary"))
  except Exception as e:  # pylint: disable=broad-except  (the user's code: say where)
    moved = " (moved? give its path now in the file)" if "vocabulary_file" in str(e) else ""
    raise UserError(f"--feature_columns={path} failed to run: {type(e).__name__}: "
                    f"{first_line(e)}{moved}") from e
  for column in (linear or []) + (dnn or []):
    if not hasattr(column, "parse_example_spec"):
      raise UserError(f"--feature_columns={path} returns {column!r}, which is not a "
                      "tf.feature_column column.")
  for column in _walk((linear or []) + (dnn or [])):
    if hasattr(column, "vocabulary_file") and not storage.exists(column.vocabulary_file):
      raise UserError(f"--feature_columns={path}: column {column.key!r} reads its vocabulary "
                      f"from {column.vocabulary_file}, which does not exist (moved?). Give its "
                      "path now in the file.")
  return linear or [], dnn or [], [str(v) for v in vocabulary] if vocabulary else None


_BASELINE = "baseline/bias"
BOOSTED_TREES_ROUTE = (
    "a BoostedTrees ensemble is trees, not layers a Keras model can hold: train TensorFlow "
    "Decision Forests' GradientBoostedTreesModel (a Keras model) on the same data, or keep "
    "serving the Estimator's own export, which TF Serving runs without tf.estimator")


def needs_no_columns(model_dir, checkpoint=None):
  """Whether this module takes `model_dir` without --feature_columns: a kmodels run of a
  Linear or wide & deep classifier (its config says the columns); a model_dir with a
  linear part or DNN embeddings (its export gives the columns back); a Baseline (it reads
  no features); BoostedTrees (refused, with the route to take)."""
  if estimator_reading.kmodels_run(model_dir)[1] is not None:  # a kmodels run's config
    return _kmodels_canned_run(model_dir) is not None
  path = estimator_reading.checkpoint_path(model_dir, checkpoint)
  return any(
      name.startswith((_BASELINE, "boosted_trees", _LINEAR,
                       _DNN_INPUT)) or name.endswith("_shared_embedding")
      for name in estimator_reading.variable_shapes(path))


def _kmodels_canned_run(model_dir):
  """(checkpoints dir, config) of a kmodels trainer=estimator run of a Linear or wide &
  deep classifier; None for anything else (a DNNClassifier run migrates by migration.py)."""
  checkpoints_dir, config, _ = estimator_reading.kmodels_run(model_dir)
  if (config is None or not trainers.is_estimator(config.trainer) or
      trainers.TABLE[config.trainer].registry_model or config.estimator.canned == "dnn"):
    return None
  return checkpoints_dir, config


def _kmodels_columns(config):
  """The columns trainer=estimator gave its canned classifier: the pixels, one numeric
  column, read by the linear part, the DNN part or both."""
  info = data.load(config.dataset, config.train.batch_size, config.train.seed).info
  column = tf.feature_column.numeric_column(trainers.estimator.FEATURE, shape=info.image_shape)
  return ([column] if config.estimator.canned != "dnn" else [],
          [column] if config.estimator.canned != "linear" else [])


def read(model_dir,
         columns_file,
         checkpoint=None,
         sparse_combiner=None,
         head=None,
         estimator_export=None):
  """Reads a canned model_dir; returns a ColumnsSource.

  columns_file: the user's columns (None: a Baseline reads none; a kmodels run's config
    says them; else the Estimator's export gives them back: `estimator_export`, or the
    newest under MODEL_DIR/export).
  sparse_combiner: the linear part's (None: the export's, else "sum", the Estimator's
    default).
  head: "classifier" or "regressor" where graph.pbtxt is missing (it says which).
  """
  kmodels_run = _kmodels_canned_run(model_dir)
  if kmodels_run:
    model_dir, config = kmodels_run
    columns_file, head = None, "classifier"
  path = estimator_reading.checkpoint_path(model_dir, checkpoint)
  shapes = estimator_reading.variable_shapes(path)
  if any(name.startswith("boosted_trees") for name in shapes):
    raise UserError(f"Cannot migrate {path}: {BOOSTED_TREES_ROUTE}.")
  has_linear = f"{_LINEAR}bias_weights" in shapes
  has_dnn = f"{_DNN}logits/kernel" in shapes
  baseline = _BASELINE in shapes
  if not (has_linear or has_dnn or baseline):
    raise UserError(f"{path} holds none of {_LINEAR}bias_weights, {_DNN}logits/kernel, "
                    f"{_BASELINE}: not a canned Linear, DNN, DNNLinearCombined or Baseline "
                    "estimator.")
  read_from = "--feature_columns"
  if columns_file:
    linear_columns, dnn_columns, label_vocabulary = load_columns(columns_file)
  elif kmodels_run:
    (linear_columns, dnn_columns), label_vocabulary = _kmodels_columns(config), None
    read_from = "the kmodels run's config"
  elif baseline:
    linear_columns, dnn_columns, label_vocabulary = [], [], None
  else:
    export = _export_to_read(model_dir, estimator_export, path, has_linear, has_dnn)
    reader = export_columns.ExportColumns(export)
    linear_columns = reader.linear_columns(shapes) if has_linear else []
    dnn_columns = reader.dnn_columns() if has_dnn else []
    export_head, label_vocabulary = reader.head()
    head = head or export_head
    sparse_combiner = sparse_combiner or reader.sparse_combiner()
    read_from = f"the Estimator's export {export}"
  for present, columns, part, function in ((has_linear, linear_columns, "linear",
                                            "linear_feature_columns"), (has_dnn, dnn_columns, "DNN",
                                                                        "dnn_feature_columns")):
    if present and not columns:
      raise UserError(f"{path} has a {part} part, and {columns_file} defines no {function}()"
                      f": define it with the columns the Estimator's {part} part was given.")
  # A file may define both (one module for several Estimators): the checkpoint says which.
  # A Baseline reads no features; columns given for it only shape the examples it parses.
  linear_columns = linear_columns if has_linear or baseline else []
  dnn_columns = dnn_columns if has_dnn or baseline else []
  units = shapes[_BASELINE if baseline else
                 f"{_LINEAR}bias_weights" if has_linear else f"{_DNN}logits/bias"][0]
  hidden = []
  while f"{_DNN}hiddenlayer_{len(hidden)}/kernel" in shapes:
    hidden.append(shapes[f"{_DNN}hiddenlayer_{len(hidden)}/kernel"][1])
  graph = estimator_reading.read_graph(model_dir)
  regressor = _is_regressor(graph, head)
  activation, alpha = (estimator_reading.activation_in(graph) if has_dnn and graph else
                       ("relu", None))
  source = ColumnsSource(checkpoint=path,
                         step=checkpoints.steps_done(path),
                         linear_columns=linear_columns,
                         dnn_columns=dnn_columns,
                         hidden_units=hidden,
                         n_classes=2 if units == 1 and not regressor else units,
                         regressor=regressor,
                         label_vocabulary=None if regressor else label_vocabulary,
                         activation=activation,
                         alpha=alpha,
                         dropout=estimator_reading.dropout_in(graph) if has_dnn else None,
                         batch_norm=any("/batchnorm_" in n for n in shapes),
                         sparse_combiner=sparse_combiner or "sum",
                         baseline=baseline,
                         kmodels_config=kmodels_run[1] if kmodels_run else None,
                         columns_from=read_from)
  if not baseline:
    _check_linear_weights(source, shapes)
  return source


def _export_to_read(model_dir, estimator_export, path, has_linear, has_dnn):
  """The Estimator export whose graph gives the columns back; a UserError if none."""
  export = estimator_export or export_columns.find_export(model_dir)
  if export and storage.exists(storage.join(export, "saved_model.pb")):
    return export
  kind = ("DNNLinearCombined"
          if has_linear and has_dnn else "Linear" if has_linear else "DNN") + " estimator"
  where = (f"--estimator_export={estimator_export} holds no saved_model.pb"
           if estimator_export else f"{storage.join(model_dir, 'export')} holds no export")
  raise UserError(f"{path} is a {kind} over feature columns, and {where}: pass "
                  "--feature_columns=FILE.py (the columns it was given) or "
                  "--estimator_export=DIR (its export_saved_model with a tf.Example parsing "
                  "receiver, whose graph gives the columns back).")


def _is_regressor(graph, head):
  """Whether the head is a regression head: the flag, else the graph's head ops."""
  if head:
    if head not in ("classifier", "regressor"):
      raise UserError(f"--head={head}: choose classifier or regressor.")
    return head == "regressor"
  if graph is None:
    raise UserError("graph.pbtxt is missing, so whether the Estimator is a classifier or a "
                    "regressor is unknown: pass --head=classifier or --head=regressor.")
  return not any(n.name.startswith("head/predictions/class_ids") for n in graph.node)


def _check_linear_weights(source, shapes):
  for column in source.linear_columns:
    name = f"{_LINEAR}{column.name}/weights"
    if name not in shapes:
      raise UserError(f"{source.checkpoint} has no {name}: the Estimator's linear part did "
                      f"not read a column named {column.name!r}. Check --feature_columns.")


class CannedModel(tf.keras.Model):
  """The canned estimator's logits from a dict of parsed features.

  reader: the Estimator's checkpoint (tf.train.load_checkpoint), whose values the weights
  start from; None builds the same layers for weights restored from a Keras checkpoint.
  """

  def __init__(self, source: ColumnsSource, reader=None):
    super().__init__(name=source.kind.lower())
    self._baseline = (self.add_weight("baseline_bias", [source.units],
                                      initializer=_initial(reader, _BASELINE))
                      if source.baseline else None)
    self._linear = (_LinearPart(source, reader)
                    if source.linear_columns and not source.baseline else None)
    self._dnn_layers = (_dnn_layers(source, reader)
                        if source.dnn_columns and not source.baseline else None)
    self._reader = reader

  def call(self, features, training=False):
    if self._baseline is not None:  # one bias for every example: see logits_for
      return self._baseline[tf.newaxis]
    logits = 0.0
    if self._dnn_layers:
      net = features
      for layer in self._dnn_layers:
        net = layer(net, training=training) if isinstance(
            layer, (tf.keras.layers.Dropout, tf.keras.layers.BatchNormalization)) else layer(net)
      logits += net
    if self._linear is not None:
      logits += self._linear(features)
    return logits

  def load_dnn_weights(self):
    """Copies the DNN part's Dense and batch norm variables from the checkpoint (the
    input layer's tables came as initial values)."""
    if not self._dnn_layers or self._reader is None:
      return
    for layer in self._dnn_layers[1:]:
      if isinstance(layer, tf.keras.layers.Dense):
        scope = f"{_DNN}{layer.name}/"
        layer.set_weights([self._reader.get_tensor(scope + n) for n in ("kernel", "bias")])
      elif isinstance(layer, tf.keras.layers.BatchNormalization):
        i = layer.name.split("_")[-1]
        scope = f"{_DNN}hiddenlayer_{i}/batchnorm_{i}/"
        layer.set_weights([
            self._reader.get_tensor(scope + n)
            for n in ("gamma", "beta", "moving_mean", "moving_variance")
        ])


def logits_for(model, features, serialized):
  """The model's logits, one row per serialized example (a Baseline's one bias included)."""
  logits = model(features)
  return tf.broadcast_to(logits, [tf.shape(serialized)[0], tf.shape(logits)[-1]])


def _initial(reader, name):
  """The checkpoint's value of `name` as an initializer; zeros to be restored later."""
  return (tf.constant_initializer(reader.get_tensor(name))
          if reader else tf.keras.initializers.Zeros())


def self_contained(column):
  """`column` with what it reads from outside the model brought in: a vocabulary file
  becomes the same vocabulary as a list, so the export carries it (the ids are equal: the
  file's line order, its vocabulary_size, the same OOV hashing and default)."""
  if type(column).__name__ == "VocabularyFileCategoricalColumn":
    if column.file_format not in (None, "text"):
      raise UserError(f"column {column.key!r}: vocabulary file_format={column.file_format} "
                      "is not supported (a text file is).")
    lines = storage.read_text(column.vocabulary_file).splitlines()[:column.vocabulary_size]
    vocabulary = [int(w) for w in lines] if column.dtype.is_integer else lines
    return tf.feature_column.categorical_column_with_vocabulary_list(
        column.key,
        vocabulary,
        dtype=column.dtype,
        default_value=column.default_value,
        num_oov_buckets=column.num_oov_buckets)
  for field in ("categorical_column", "source_column"):
    if hasattr(column, field) and hasattr(column, "_replace"):
      column = column._replace(**{field: self_contained(getattr(column, field))})
  if hasattr(column, "keys") and hasattr(column, "_replace"):
    column = column._replace(keys=tuple(
        k if isinstance(k, str) else self_contained(k) for k in column.keys))
  return column


def _dnn_input_column(column, reader):
  """The DNN input layer's column, self-contained; an embedding's table from the
  checkpoint. A shared embedding becomes an embedding with a copy of the shared table."""
  kind = type(column).__name__
  if kind not in ("EmbeddingColumn", "SharedEmbeddingColumn"):
    return self_contained(column)
  if kind == "SharedEmbeddingColumn":
    creator = column.shared_embedding_column_creator
    table, dimension = creator._name, creator._dimension  # pylint: disable=protected-access
  else:
    table, dimension = f"{_DNN_INPUT}{column.name}/embedding_weights", column.dimension
  return tf.feature_column.embedding_column(self_contained(column.categorical_column),
                                            dimension,
                                            combiner=column.combiner,
                                            initializer=_initial(reader, table),
                                            max_norm=column.max_norm)


class _DnnInput(tf.keras.layers.Layer):
  """The Estimator's input layer: each column's dense values, joined in the order of the
  columns' names (its order, kept even where a shared embedding's Keras twin is named
  differently)."""

  def __init__(self, columns, reader):
    super().__init__(name="input_layer")
    self._columns = [
        tf.keras.layers.DenseFeatures([_dnn_input_column(c, reader)], name=f"column_{i}")
        for i, c in enumerate(sorted(columns, key=lambda c: c.name))
    ]

  def call(self, features):
    return tf.concat([column(features) for column in self._columns], axis=-1)


def _dnn_layers(source, reader):
  layers = [_DnnInput(source.dnn_columns, reader)]
  for i, units in enumerate(source.hidden_units):
    layers.append(tf.keras.layers.Dense(units, name=f"hiddenlayer_{i}"))
    layers.append(tf.keras.layers.Lambda(source.activation_fn(), name=f"activation_{i}"))
    if source.dropout:
      layers.append(tf.keras.layers.Dropout(source.dropout, name=f"dropout_{i}"))
    if source.batch_norm:
      layers.append(tf.keras.layers.BatchNormalization(epsilon=1e-3, name=f"batchnorm_{i}"))
  layers.append(tf.keras.layers.Dense(source.units, name="logits"))
  return layers


class _LinearPart(tf.keras.layers.Layer):
  """Sum over columns of the Estimator's linear weights, plus its bias.

  A categorical column's part is an embedding_column whose table is the column's weights
  and whose combiner is sparse_combiner; a dense column's is its value @ its weights.
  """

  def __init__(self, source, reader):
    super().__init__(name="linear")
    categorical = [c for c in source.linear_columns if hasattr(c, "num_buckets")]
    dense = sorted((c for c in source.linear_columns if not hasattr(c, "num_buckets")),
                   key=lambda c: c.name)  # DenseFeatures' own order
    self._categorical = tf.keras.layers.DenseFeatures([
        tf.feature_column.embedding_column(
            self_contained(c),
            dimension=source.units,
            combiner=source.sparse_combiner,
            initializer=_initial(reader, f"{_LINEAR}{c.name}/weights")) for c in categorical
    ],
                                                      name="categorical") if categorical else None
    self._dense = tf.keras.layers.DenseFeatures(dense, name="dense") if dense else None
    self._dense_weights = self.add_weight(
        "linear_dense_weights", [sum(_dense_size(c) for c in dense), source.units],
        initializer=tf.constant_initializer(
            np.concatenate([reader.get_tensor(f"{_LINEAR}{c.name}/weights") for c in dense]))
        if reader and dense else tf.keras.initializers.Zeros()) if dense else None
    self._bias = self.add_weight("linear_bias", [source.units],
                                 initializer=_initial(reader, f"{_LINEAR}bias_weights"))
    self._categorical_count = len(categorical)
    self._units = source.units

  def call(self, features):
    logits = tf.convert_to_tensor(self._bias)
    if self._categorical is not None:  # [N, columns * units] -> the sum over columns
      embedded = self._categorical(features)
      logits += tf.reduce_sum(tf.reshape(embedded, [-1, self._categorical_count, self._units]),
                              axis=1)
    if self._dense is not None:
      logits += tf.matmul(self._dense(features), self._dense_weights)
    return logits


def _dense_size(column):
  return column.variable_shape.num_elements()


class ClassificationHead:
  """Softmax over n logits, or the logistic of one; the Estimator export's signatures."""
  compared = ("logits", "probabilities")

  def __init__(self, n_classes, label_vocabulary=None):
    self._n_classes = n_classes
    names = label_vocabulary or [str(i) for i in range(n_classes)]
    self._names = tf.constant(names)

  def outputs(self, logits):
    """The predict outputs, as the Estimator's export names them."""
    if self._n_classes == 2:
      positive = tf.sigmoid(logits)
      probabilities = tf.concat([1 - positive, positive], axis=-1)
    else:
      probabilities = tf.nn.softmax(logits)
    class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)[:, tf.newaxis]
    all_class_ids = tf.tile(tf.range(self._n_classes)[tf.newaxis], [tf.shape(logits)[0], 1])
    binary = {"logistic": probabilities[:, 1:]} if self._n_classes == 2 else {}
    return {
        "logits": logits,
        **binary, "probabilities": probabilities,
        "class_ids": class_ids,
        "classes": tf.gather(self._names, class_ids),
        "all_class_ids": all_class_ids,
        "all_classes": tf.gather(self._names, all_class_ids)
    }

  def loss(self):
    """The Estimator's training loss on the logits, to train the migrated model on (labels:
    class ids)."""
    if self._n_classes == 2:
      return tf.keras.losses.BinaryCrossentropy(from_logits=True)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def signatures(self, predict_outputs):
    """{name: (input name, outputs of serialized tf.Examples)} besides `predict`."""

    def classification(inputs):
      outputs = predict_outputs(inputs)
      return {"classes": outputs["all_classes"], "scores": outputs["probabilities"]}

    signatures = {"classification": classification, "serving_default": classification}
    if self._n_classes == 2:
      signatures["regression"] = lambda inputs: {
          "outputs": predict_outputs(inputs)["probabilities"][:, 1:]
      }
    return signatures


class RegressionHead:
  """The logits are the predictions (identity link)."""
  compared = ("predictions",)

  def __init__(self, label_dimension):
    self._label_dimension = label_dimension

  def outputs(self, logits):
    return {"predictions": logits}

  @staticmethod
  def loss():
    return tf.keras.losses.MeanSquaredError()

  @staticmethod
  def signatures(predict_outputs):

    def regression(inputs):
      return {"outputs": predict_outputs(inputs)["predictions"]}

    return {"regression": regression, "serving_default": regression}


def build_keras_model(source, from_estimator=True):
  """The Keras model, its weights the Estimator checkpoint's (from_estimator) or to be
  restored by load_weights."""
  model = CannedModel(source,
                      tf.train.load_checkpoint(source.checkpoint) if from_estimator else None)
  model(parse(source.parse_spec(), tf.constant(check_examples(source, 2))))
  model.load_dnn_weights()
  return model


def parse(spec, serialized):
  """The features of serialized tf.Examples; none for no columns (a Baseline's)."""
  return tf.io.parse_example(serialized, spec) if spec else {}


KERAS_WEIGHTS = ("keras", "weights")  # under the migration's workdir: TF-format weights


def load_keras_model(workdir, columns_file):
  """The migrated Keras model of `workdir`, rebuilt from its migration.json and the columns
  file with its weights restored: to train on, on any TF 2 with Keras 2 (no tf.estimator)."""
  record_path = storage.join(workdir, "migration.json")
  if not storage.exists(record_path):
    raise UserError(f"{workdir} has no migration.json: not a launch.migrate "
                    "--feature_columns workdir.")
  source = ColumnsSource.from_record(reporting.read_json(record_path, None), columns_file)
  model = build_keras_model(source, from_estimator=False)
  model.load_weights(storage.join(workdir, *KERAS_WEIGHTS)).assert_existing_objects_matched()
  return model, source


def check_examples(source, count=CHECK_EXAMPLES, seed=0):
  """Serialized tf.Examples that cover the columns: every vocabulary entry and one value
  outside it, every bucket edge and values past both ends, and (for features that may be
  missing) examples without the feature."""
  rng = np.random.default_rng(seed)
  edges = _bucket_edges(source.linear_columns + source.dnn_columns)
  vocabularies = _vocabularies(source.linear_columns + source.dnn_columns)
  examples = []
  for i in range(count):
    feature = {}
    for key, spec in sorted(source.parse_spec().items()):
      if isinstance(spec, tf.io.VarLenFeature) and i % 7 == 6:
        continue  # missing: allowed for var-len features
      size = int(np.prod(spec.shape)) if isinstance(spec, tf.io.FixedLenFeature) else (1 + i % 3)
      feature[key] = _feature_values(spec.dtype, size, i, rng, edges.get(key),
                                     vocabularies.get(key))
    examples.append(
        tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
  return examples  # a list: numpy's bytes dtype would strip a proto's trailing zero bytes


def _feature_values(dtype, size, i, rng, edges, vocabulary):
  if dtype == tf.string:
    words = [*(vocabulary or []), "~out-of-vocabulary~", f"w{rng.integers(1000)}"]
    values = [words[(i + j) % len(words)].encode() for j in range(size)]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
  if dtype == tf.int64:
    values = [int((i + j) % max(len(vocabulary or ()), 10)) for j in range(size)]
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  points = sorted(edges or [0.0])
  spread = max(points[-1] - points[0], 1.0)
  candidates = [*points, points[0] - spread, points[-1] + spread]
  values = [
      float(candidates[(i + j) % len(candidates)]) if
      (i + j) % 2 == 0 else float(rng.uniform(points[0] - spread, points[-1] + spread))
      for j in range(size)
  ]
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _walk(columns):
  for column in columns:
    yield column
    for name in ("categorical_column", "source_column"):
      if hasattr(column, name):
        yield from _walk([getattr(column, name)])
    if hasattr(column, "keys"):
      yield from _walk([k for k in column.keys if not isinstance(k, str)])


def _bucket_edges(columns):
  return {
      c.source_column.key: list(c.boundaries) for c in _walk(columns) if hasattr(c, "boundaries")
  }


def _vocabularies(columns):
  return {
      c.key: [str(v) for v in c.vocabulary_list]
      for c in _walk([self_contained(c) for c in columns])
      if hasattr(c, "vocabulary_list")
  }


def estimator_predictions(source, examples):
  """The Estimator's own predict on serialized `examples`: {output: array}."""
  estimator = source.estimator(tempfile.mkdtemp(prefix="kmodels-migrate-"))
  spec = source.parse_spec()

  def features(batch):  # a Baseline takes only its batch size from its (dense) features
    return {"examples": batch} if source.baseline else parse(spec, batch)

  def input_fn():
    return tf.data.Dataset.from_tensor_slices(examples).batch(64).map(features)

  batches = list(
      estimator.predict(input_fn, checkpoint_path=source.checkpoint, yield_single_examples=False))
  keys = source.head().compared + (() if source.regressor else ("class_ids",))
  return {key: np.concatenate([b[key] for b in batches]) for key in keys}


class _Exported(tf.Module):

  def __init__(self, model, spec, head):
    super().__init__()
    self.model = model
    self._spec, self._head = spec, head

  def predict_outputs(self, serialized):
    features = parse(self._spec, serialized)
    return self._head.outputs(logits_for(self.model, features, serialized))


_WARMUP_EXAMPLES = 2


def example_signatures(head, predict_outputs):
  """The Estimator export's signatures over serialized tf.Examples, as tf.functions:
  `predict` takes "examples"; the head's (classification, regression) take "inputs"."""
  signatures = {
      "predict":
          tf.function(predict_outputs,
                      input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  }
  for name, function in head.signatures(predict_outputs).items():
    signatures[name] = tf.function(
        function, input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
  return signatures


def export_for_serving(source, model, export_dir, warmup_examples):
  """The Estimator's export signatures over serialized tf.Examples, saved to export_dir,
  with TF Serving warm-up requests (`warmup_examples`, serialized) for each signature."""
  module = _Exported(model, source.parse_spec(), source.head())
  signatures = example_signatures(source.head(), module.predict_outputs)
  tf.saved_model.save(module, export_dir, signatures=signatures)
  examples = tf.constant(warmup_examples[:_WARMUP_EXAMPLES])  # not numpy: it drops \0 ends
  serving.write_prediction_logs(export_dir, [
      serving.predict_log(name, {"examples" if name == "predict" else "inputs": examples})
      for name in sorted(signatures)
  ])
  return sorted(signatures)


def _check_data(source, check_data):
  """(serialized tf.Examples, their labels or None, description) for the proof."""
  if source.kmodels_config is not None and not (check_data or "").endswith(".tfrecord"):
    return _split_examples(source.kmodels_config, check_data or
                           source.kmodels_config.dataset.eval_split)
  if not check_data:
    return (check_examples(source), None,
            f"{CHECK_EXAMPLES} tf.Examples generated from the columns")
  if not check_data.endswith(".tfrecord") or not storage.exists(check_data):
    raise UserError(f"--check_data={check_data}: expected an existing .tfrecord file of "
                    "serialized tf.Examples (with --feature_columns).")
  try:
    examples = list(tf.data.TFRecordDataset(check_data).as_numpy_iterator())
    if not examples:
      raise UserError(f"--check_data={check_data} holds no records.")
    parse(source.parse_spec(), tf.constant(examples))
  except tf.errors.OpError as e:
    said = re.sub(r"^\{\{[^}]*\}\}\s*", "", first_line(e.message))  # TF's op-name prefix
    raise UserError(f"--check_data={check_data} is not a TFRecord file of tf.Examples these "
                    f"columns parse: {said}") from e
  return examples, None, f"{check_data} ({len(examples)} tf.Examples)"


def _split_examples(config, split):
  """A kmodels run's split as the tf.Examples its Estimator's clients would send: the
  pixels (as its input_fn fed them) under the feature key; and the labels."""
  examples, labels = [], []
  for images, batch_labels in data.load_split(config, split, "--check_data").eval:
    for image in images.numpy():
      examples.append(
          tf.train.Example(features=tf.train.Features(
              feature={
                  trainers.estimator.FEATURE:
                      tf.train.Feature(float_list=tf.train.FloatList(value=image.ravel()))
              })).SerializeToString())
    labels.append(batch_labels.numpy())
  return examples, np.concatenate(labels), f"{config.dataset.name} split {split!r}"


def migrate(model_dir,
            output_dir,
            columns_file=None,
            checkpoint=None,
            sparse_combiner=None,
            check_data=None,
            head=None,
            estimator_export=None,
            tolerance=1e-5):
  """Reads, proves equal on check tf.Examples, exports; returns the migration record."""
  estimator_reading.check_estimator_available()
  source = read(model_dir, columns_file, checkpoint, sparse_combiner, head, estimator_export)
  examples, labels, check_description = _check_data(source, check_data)
  started = time.perf_counter()
  expected = estimator_predictions(source, examples)
  estimator_seconds = time.perf_counter() - started
  tf.keras.backend.clear_session()
  model = build_keras_model(source)
  head = source.head()
  started = time.perf_counter()
  serialized = tf.constant(examples)
  actual = {
      k: v.numpy() for k, v in head.outputs(
          logits_for(model, parse(source.parse_spec(), serialized), serialized)).items()
  }
  keras_seconds = time.perf_counter() - started
  differences = {key: float(np.max(np.abs(expected[key] - actual[key]))) for key in head.compared}
  proof = {
      "examples":
          len(examples),
      "max_abs_difference":
          max(differences.values()),
      "by_output":
          differences,
      "tolerance":
          tolerance,
      "class_ids_equal":
          bool(np.array_equal(expected["class_ids"], actual["class_ids"]))
          if "class_ids" in expected else None,
      "parameters":
          model.count_params(),
      "estimator_predict_examples_per_second":
          len(examples) / estimator_seconds,
      "keras_predict_examples_per_second":
          len(examples) / keras_seconds
  }
  proof["equal"] = (proof["max_abs_difference"] <= tolerance and
                    proof["class_ids_equal"] is not False)
  if labels is not None:
    for name, outputs in (("estimator", expected), ("keras", actual)):
      proof[f"{name}_accuracy"] = float(np.mean(outputs["class_ids"].ravel() == labels))
  record = dict(source.record(), proof=proof, check_data=check_description)
  storage.makedirs(output_dir)
  reporting.write_json(storage.join(output_dir, "migration.json"), record)
  if not proof["equal"]:
    raise UserError(f"The Keras model does not reproduce the {source.kind}: max difference "
                    f"{proof['max_abs_difference']:.3g} > {tolerance:g} over "
                    f"{len(examples)} tf.Examples. Nothing was exported; check "
                    "--feature_columns (the columns the Estimator was trained with) and "
                    "--sparse_combiner.")
  record["signatures"] = export_for_serving(source, model, storage.join(output_dir, "export", "1"),
                                            examples)
  model.save_weights(storage.join(output_dir, *KERAS_WEIGHTS))
  reporting.write_json(storage.join(output_dir, "migration.json"), record)
  logging.info("Migrated %s over %d columns: max difference %.3g over %d tf.Examples.", source.kind,
               len(source.linear_columns) + len(source.dnn_columns), proof["max_abs_difference"],
               len(examples))
  return record
