"""Reads what an Estimator's model_dir holds, and rebuilds it as Estimator and as Keras.

A canned DNNClassifier leaves (TF 2.15, DNNClassifierV2) these variables in its checkpoint:
dnn/hiddenlayer_<i>/{kernel,bias}, with batch_norm=True also
dnn/hiddenlayer_<i>/batchnorm_<i>/{gamma,beta,moving_mean,moving_variance}, then
dnn/logits/{kernel,bias} (one logit for 2 classes, n for n > 2) and global_step. Each hidden
layer is Dense(activation) -> Dropout (training only) -> BatchNormalization(epsilon 1e-3).
The variables do not name the activation, the dropout or the feature column; graph.pbtxt
(the training graph) does: the activation op inside dnn/hiddenlayer_0/, the dropout ops,
and the numeric column's scope input_from_feature_columns/input_layer/<key>/ with the
input op whose output shape is the feature's.
"""

import dataclasses
import functools
import tempfile
import typing

from absl import logging
from google.protobuf import text_format
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import checkpoints, models, serving, storage, trainers
from kmodels.errors import UserError, first_line
from kmodels.tools import evaluation
from kmodels.workdir import Workdir

# Activation ops a DNNClassifier's hidden layer may hold -> the tf.nn function.
ACTIVATIONS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "Elu": "elu",
    "Selu": "selu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "Softsign": "softsign",
    "LeakyRelu": "leaky_relu"
}
_DNN_PREFIX = "dnn/"
_INPUT_LAYER = "input_from_feature_columns/input_layer/"
_BATCH_NORM_EPSILON = 1e-3  # Keras' default, which DNNClassifier keeps
_PREDICT_BATCH = 256


class Overrides(typing.NamedTuple):
  """What the user says where graph.pbtxt is missing or to be corrected."""
  activation: typing.Optional[str] = None
  feature_key: typing.Optional[str] = None
  input_shape: typing.Optional[typing.Tuple[int, ...]] = None
  keras_model: typing.Optional[str] = None  # model_to_estimator: the Keras model's file


_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def check_estimator_available():
  if not hasattr(tf, "estimator"):
    raise UserError(
        "launch.migrate proves every migration by running the Estimator's own predict, which "
        f"needs tf.estimator (TensorFlow <= 2.15; this is {tf.__version__}). Migrate on the "
        "full lane (`bash launch/setup.sh`, then .venv/bin/python -m launch.migrate ...); the "
        "export it writes serves on any TensorFlow 2.")


@dataclasses.dataclass
class Source:
  """A model_dir's checkpoint and what was read about its network."""
  checkpoint: str
  step: int
  feature_key: str
  input_shape: typing.Tuple[int, ...]
  kmodels_config: typing.Optional[ml_collections.ConfigDict]
  kmodels_card: typing.Optional[dict]  # the model card of the kmodels run's export
  read_from: dict  # setting -> "graph" | "variables" | "flag" | "default" | "config"

  kind = ""

  def label_names(self):
    return list(self.kmodels_card["label_names"]) if self.kmodels_card else None

  def image_preprocessing_known(self):
    """A kmodels image run: its feature is the image scaled to [0, 1]."""
    return self.kmodels_card is not None

  def record(self):
    fields = {
        k: v
        for k, v in dataclasses.asdict(self).items()
        if k not in ("kmodels_config", "kmodels_card")
    }
    fields["input_shape"] = list(self.input_shape)
    return dict(kind=self.kind, **fields, kmodels_run=self.kmodels_config is not None)

  def model_card(self, signatures):
    return {
        "migrated_from": self.record(),
        "signatures": signatures,
        "input": {
            "signature": "serving_default",
            "name": self.feature_key,
            "dtype": "float32",
            "shape": [None, *self.input_shape]
        },
        "outputs": {
            "probabilities": "float32 [N, classes]",
            "class_id": "int64 [N]",
            **({
                "class_name": "string [N]"
            } if self.label_names() else {})
        },
        "label_names": self.label_names(),
        "dataset": self.kmodels_card and self.kmodels_card.get("dataset")
    }

  def probabilities(self, outputs):
    return outputs


@dataclasses.dataclass
class DnnSource(Source):
  """A canned DNNClassifier."""
  hidden_units: typing.List[int] = None
  n_classes: int = None
  activation: str = "relu"
  alpha: typing.Optional[float] = None  # leaky_relu's slope
  batch_norm: bool = False
  dropout: typing.Optional[float] = None

  kind = "DNNClassifier"

  def summary(self):
    return (f"DNNClassifier{self.hidden_units} ({self.activation}"
            f"{', batch norm' if self.batch_norm else ''}"
            f"{f', dropout {self.dropout:g}' if self.dropout else ''}), {self.n_classes} "
            f"classes, feature {self.feature_key!r} {tuple(self.input_shape)}, step "
            f"{self.step} ({self.checkpoint}).")

  def activation_fn(self):
    return activation_fn(self.activation, self.alpha)

  def build_keras_model(self):
    """The same network in Keras, head included: it returns the Estimator's probabilities."""
    reader = tf.train.load_checkpoint(self.checkpoint)
    inputs = tf.keras.Input(shape=self.input_shape, name=self.feature_key)
    net = tf.keras.layers.Flatten(name="flatten")(inputs)  # the numeric column's reshape
    layers = []
    for i, units in enumerate(self.hidden_units):
      layers.append((tf.keras.layers.Dense(units, name=f"hiddenlayer_{i}"),
                     f"{_DNN_PREFIX}hiddenlayer_{i}/", ("kernel", "bias")))
      net = self._activation_layer(i)(layers[-1][0](net))
      if self.dropout:
        net = tf.keras.layers.Dropout(self.dropout, name=f"dropout_{i}")(net)
      if self.batch_norm:
        layers.append((tf.keras.layers.BatchNormalization(epsilon=_BATCH_NORM_EPSILON,
                                                          name=f"batchnorm_{i}"),
                       f"{_DNN_PREFIX}hiddenlayer_{i}/batchnorm_{i}/",
                       ("gamma", "beta", "moving_mean", "moving_variance")))
        net = layers[-1][0](net)
    layers.append(
        (tf.keras.layers.Dense(self.n_classes if self.n_classes > 2 else 1,
                               name="logits"), f"{_DNN_PREFIX}logits/", ("kernel", "bias")))
    logits = layers[-1][0](net)
    model = tf.keras.Model(inputs,
                           _head_probabilities(logits, self.n_classes),
                           name="dnn_classifier")
    for layer, scope, names in layers:
      layer.set_weights([reader.get_tensor(scope + name) for name in names])
    return model

  def _activation_layer(self, i):
    if self.activation == "leaky_relu":
      return tf.keras.layers.LeakyReLU(self.alpha if self.alpha is not None else 0.2,
                                       name=f"activation_{i}")
    if self.activation == "relu6":
      return tf.keras.layers.ReLU(max_value=6.0, name=f"activation_{i}")
    return tf.keras.layers.Activation(self.activation, name=f"activation_{i}")

  def estimator(self, model_dir):
    column = tf.feature_column.numeric_column(self.feature_key, shape=self.input_shape)
    return tf.estimator.DNNClassifier(hidden_units=self.hidden_units,
                                      feature_columns=[column],
                                      n_classes=self.n_classes,
                                      activation_fn=self.activation_fn(),
                                      dropout=self.dropout,
                                      batch_norm=self.batch_norm,
                                      model_dir=model_dir)

  @staticmethod
  def predicted(prediction):
    return prediction["probabilities"]


def activation_fn(name, alpha=None):
  """The tf.nn function of a hidden layer's activation (leaky_relu with its slope)."""
  fn = getattr(tf.nn, name)
  return functools.partial(fn, alpha=alpha) if alpha is not None else fn


def _head_probabilities(logits, n_classes):
  # The binary head's probabilities: softmax over [0, logit], as tf.estimator computes them.
  if n_classes == 2:
    logits = tf.concat([tf.zeros_like(logits), logits], axis=-1)
  return tf.keras.layers.Softmax(name="probabilities")(logits)


@dataclasses.dataclass
class KerasSource(Source):
  """A model_to_estimator model_dir: a Keras model's weights under their own names."""
  model_file: typing.Optional[str] = None
  model_name: typing.Optional[str] = None
  logits: bool = False  # the model outputs logits (kmodels registry models of MNIST)

  kind = "model_to_estimator"

  def summary(self):
    return (f"model_to_estimator of Keras model {self.model_name!r}, feature "
            f"{self.feature_key!r} {tuple(self.input_shape)}, step {self.step} "
            f"({self.checkpoint}).")

  def build_keras_model(self):
    tf.keras.backend.clear_session()  # layer names as in a fresh process: as checkpointed
    model = self._architecture()
    reader = tf.train.load_checkpoint(self.checkpoint)
    names = reader.get_variable_to_shape_map()
    if _OBJECT_GRAPH_KEY in names:  # keys relative to the model: Keras restores them itself
      status = model.load_weights(self.checkpoint)
      try:
        status.assert_existing_objects_matched()
      except AssertionError as e:
        raise self._not_this_model(first_line(e)) from e
      return model
    missing = [w.name.split(":")[0] for w in model.weights if w.name.split(":")[0] not in names]
    if missing:
      raise self._not_this_model(f"missing {', '.join(missing[:4])}")
    model.set_weights([reader.get_tensor(w.name.split(":")[0]) for w in model.weights])
    return model

  def _not_this_model(self, detail):
    return UserError(f"{self.checkpoint} does not hold this Keras model's weights ({detail}): "
                     "is it the model model_to_estimator was given?")

  def _architecture(self):
    if self.kmodels_config is not None:
      image_shape = tuple(self.kmodels_card["input"]["shape"][1:])
      return models.build_from_config(self.kmodels_config.model, image_shape,
                                      len(self.kmodels_card["label_names"]))
    try:
      if self.model_file.endswith(".json"):
        return tf.keras.models.model_from_json(storage.read_text(self.model_file))
      return tf.keras.models.load_model(self.model_file, compile=False)
    except Exception as e:  # pylint: disable=broad-except  (as serving.load_export)
      raise UserError(f"The Keras model {self.model_file} cannot be read: it is damaged or "
                      f"not a Keras model ({type(e).__name__}: {first_line(e)}). Pass "
                      "--keras_model with the model model_to_estimator was given.") from e

  def estimator(self, model_dir):
    model = self.build_keras_model()
    # model_to_estimator wants a compiled model; its checkpoints hold a legacy optimizer's
    # slots, which a current Keras optimizer refuses to sit beside (predict uses neither).
    model.compile(optimizer=tf.keras.optimizers.legacy.SGD(),
                  loss="sparse_categorical_crossentropy")
    return tf.keras.estimator.model_to_estimator(keras_model=model, model_dir=model_dir)

  @staticmethod
  def predicted(prediction):
    return next(iter(prediction.values()))

  def probabilities(self, outputs):
    return tf.nn.softmax(tf.cast(outputs, tf.float32)) if self.logits else outputs


def estimator_outputs(source, features):
  """The Estimator's own predictions for `features`, from `source`'s checkpoint."""
  # A throwaway model_dir: the user's model_dir is never written.
  estimator = source.estimator(tempfile.mkdtemp(prefix="kmodels-migrate-"))

  def input_fn():
    return tf.data.Dataset.from_tensor_slices({source.feature_key: features}).batch(_PREDICT_BATCH)

  return np.concatenate([
      source.predicted(p) for p in estimator.predict(
          input_fn, checkpoint_path=source.checkpoint, yield_single_examples=False)
  ])


def read(estimator_dir, checkpoint=None, overrides=None):
  """Reads `estimator_dir` (a model_dir or a kmodels workdir); returns a Source."""
  overrides = overrides or Overrides()
  model_dir, config, card = kmodels_run(estimator_dir)
  path = checkpoint_path(model_dir, checkpoint)
  shapes = variable_shapes(path)
  step = checkpoints.steps_done(path)
  graph = read_graph(model_dir)
  common = dict(checkpoint=path, step=step, kmodels_config=config, kmodels_card=card)
  if any(name.startswith(_DNN_PREFIX) for name in shapes):
    return _read_dnn(shapes, graph, overrides, common)
  keras_inside = config is not None and trainers.TABLE[config.trainer].registry_model
  if keras_inside or overrides.keras_model:
    return _read_keras(overrides, config, card, common)
  raise UserError(
      _not_supported(
          path, shapes, "no dnn/hiddenlayer_*/kernel variables: not a canned DNNClassifier. "
          "A model_to_estimator model_dir migrates with --keras_model=FILE (the Keras model it "
          "was given: .keras, .h5, SavedModel or to_json() text); a LinearClassifier migrates with "
          "--feature_columns=FILE.py (the columns it was given); a custom model_fn or another "
          "canned Estimator is not supported"))


def kmodels_run(estimator_dir):
  """(model_dir, config, model card) of a kmodels workdir; (estimator_dir, None, None) else."""
  workdir = Workdir(estimator_dir)
  if not storage.exists(workdir.config_json):
    return estimator_dir, None, None
  config = evaluation.load_config(workdir)
  if not trainers.is_estimator(config.trainer):
    raise UserError(f"{estimator_dir} is a kmodels run of trainer={config.trainer}: it is a "
                    "Keras model already (its export/ serves as it is).")
  export = workdir.current_export()
  card = export and serving.read_card(export)
  if not card:
    raise UserError(f"{estimator_dir} has no export/<version>/model_card.json: the run did "
                    "not finish. "
                    "Run its launch.train command again to complete it, then migrate.")
  return workdir.checkpoints, config, card


def checkpoint_path(model_dir, checkpoint):
  if checkpoint:
    if not tf.io.gfile.glob(checkpoint + ".index"):
      raise UserError(f"--checkpoint={checkpoint}: no checkpoint there (expected "
                      f"{checkpoint}.index), e.g. {storage.join(model_dir, 'model.ckpt-200')}.")
    return checkpoint
  if not storage.isdir(model_dir):
    raise UserError(f"--estimator_dir={model_dir}: no such directory.")
  path = tf.train.latest_checkpoint(model_dir)
  if not path:
    raise UserError(f"{model_dir} holds no checkpoint (no 'checkpoint' file naming "
                    "model.ckpt-N): pass an Estimator's model_dir, or --checkpoint=PATH.")
  return path


def variable_shapes(path):
  """{variable name: shape} of the checkpoint at `path`, once it reads back whole."""
  readable, why = checkpoints.is_readable(path)
  if not readable:
    raise UserError(f"The checkpoint {path} cannot be read: it is damaged or incomplete "
                    f"({why}). Pass --checkpoint=PATH of an earlier one (model.ckpt-N in the "
                    "model_dir).")
  return tf.train.load_checkpoint(path).get_variable_to_shape_map()


def read_graph(model_dir):
  path = storage.join(model_dir, "graph.pbtxt")
  if not storage.exists(path):
    return None
  return text_format.Parse(storage.read_text(path), tf.compat.v1.GraphDef())


def _not_supported(path, shapes, why):
  examples = ", ".join(sorted(n for n in shapes if n != "global_step")[:5])
  return f"Cannot migrate {path}: {why}. Its variables include: {examples}."


def _read_dnn(shapes, graph, overrides, common):
  if any(n.startswith("linear/") for n in shapes):
    raise UserError(
        _not_supported(
            common["checkpoint"], shapes, "a DNNLinearCombinedClassifier (linear/ and dnn/ "
            "variables) migrates with --feature_columns=FILE.py, "
            "the columns it was given"))
  embedded = [n for n in shapes if n.startswith(_DNN_PREFIX + _INPUT_LAYER)]
  if embedded:
    raise UserError(
        _not_supported(
            common["checkpoint"], shapes, f"embedding or categorical feature columns "
            f"({embedded[0]}) migrate with --feature_columns=FILE.py, the columns it was given"))
  count = len([
      n for n in shapes
      if n.startswith(_DNN_PREFIX +
                      "hiddenlayer_") and n.endswith("/kernel") and "batchnorm" not in n
  ])
  if f"{_DNN_PREFIX}logits/kernel" not in shapes:
    raise UserError(_not_supported(common["checkpoint"], shapes, "no dnn/logits/kernel"))
  hidden = [shapes[f"{_DNN_PREFIX}hiddenlayer_{i}/kernel"][1] for i in range(count)]
  logits = shapes[f"{_DNN_PREFIX}logits/kernel"][1]
  if overrides.activation and overrides.activation not in ACTIVATIONS.values():
    raise UserError(f"--activation={overrides.activation}: choose one of "
                    f"{', '.join(ACTIVATIONS.values())}.")
  read_from = {"hidden_units": "variables", "n_classes": "variables", "batch_norm": "variables"}
  activation, alpha = _pick(read_from, "activation", (overrides.activation and
                                                      (overrides.activation, None), "flag"),
                            (activation_in(graph), "graph"),
                            (("relu", None), "default (no graph.pbtxt)"))
  dropout = _pick(read_from, "dropout", (dropout_in(graph), "graph"),
                  (None, "graph" if graph else "default (no graph.pbtxt)"))
  feature_key, graph_shape = _pick(read_from, "feature_key",
                                   (overrides.feature_key and
                                    (overrides.feature_key, None), "flag"),
                                   (_feature(graph), "graph"), ((None, None), ""))
  if not feature_key:
    raise UserError("graph.pbtxt is missing, so the feature key is unknown: pass "
                    "--feature_key=NAME (the numeric_column's key).")
  rows = shapes[f"{_DNN_PREFIX}hiddenlayer_0/kernel" if count else f"{_DNN_PREFIX}logits/kernel"][0]
  input_shape = _input_shape(overrides.input_shape or graph_shape or (rows,), rows, read_from,
                             overrides.input_shape, graph_shape)
  return DnnSource(**common,
                   feature_key=feature_key,
                   input_shape=input_shape,
                   read_from=read_from,
                   hidden_units=hidden,
                   n_classes=2 if logits == 1 else logits,
                   activation=activation,
                   alpha=alpha,
                   batch_norm=any("/batchnorm_" in n for n in shapes),
                   dropout=dropout)


def _pick(read_from, name, *candidates):
  """The first (value, origin) whose value is not None, else the last (the fallback);
  records the origin in read_from."""
  for i, (value, origin) in enumerate(candidates):
    if value is not None or i == len(candidates) - 1:
      read_from[name] = origin
      return value
  return None


def _input_shape(shape, rows, read_from, flag_shape, graph_shape):
  shape = tuple(int(d) for d in shape)
  read_from["input_shape"] = ("flag"
                              if flag_shape else "graph" if graph_shape else "variables (flat)")
  if int(np.prod(shape)) != rows:
    raise UserError(f"input shape {shape} has {int(np.prod(shape))} values; the first "
                    f"layer takes {rows}. Pass --input_shape matching the feature column.")
  return shape


def _scope_nodes(graph, scope):
  return [n for n in graph.node if n.name.startswith(scope)] if graph else []


def activation_in(graph):
  """(tf.nn name, leaky_relu alpha) of the first hidden layer's activation op; None if none."""
  if graph is None:
    return None
  for node in _scope_nodes(graph, f"{_DNN_PREFIX}hiddenlayer_0/"):
    if node.op in ACTIVATIONS:
      alpha = node.attr["alpha"].f if node.op == "LeakyRelu" else None
      return ACTIVATIONS[node.op], alpha
  ops = sorted({n.op for n in _scope_nodes(graph, f"{_DNN_PREFIX}hiddenlayer_0/")})
  raise UserError(f"The first hidden layer's activation is none of {', '.join(ACTIVATIONS)} "
                  f"(its ops: {', '.join(ops)}). Pass --activation=NAME (a tf.nn function).")


def dropout_in(graph):
  """The dropout rate, from the graph's dropout ops; None without dropout (or graph).

  Keras' Dropout in the training graph compares a uniform sample with the rate:
  dnn/dropout[_<i>]/dropout/GreaterEqual/y is that rate.
  """
  for node in _scope_nodes(graph, _DNN_PREFIX + "dropout"):
    if node.name.endswith("/dropout/GreaterEqual/y") and node.op == "Const":
      return float(tf.make_ndarray(node.attr["value"].tensor))
  return None


def _feature(graph):
  """(key, shape per example) of the one numeric column; None without a graph."""
  if graph is None:
    return None
  scope = _DNN_PREFIX + _INPUT_LAYER
  # One name scope per column, except input_layer/concat where the columns are joined.
  scopes = sorted({
      n.name[len(scope):].split("/")[0]
      for n in _scope_nodes(graph, scope)
      if "/" in n.name[len(scope):]
  } - {"concat"})
  if len(scopes) != 1:
    raise UserError(f"The DNNClassifier reads {len(scopes)} feature columns "
                    f"({', '.join(scopes)}); only one numeric_column is supported.")
  # DenseFeatures opens a variable scope named after the column first, so the column's ops
  # land in "<key>_1" (DNNClassifierV2, TF 2.x); --feature_key corrects a key that itself
  # ends in _1.
  key = scopes[0][:-2] if scopes[0].endswith("_1") else scopes[0]
  return key, _feature_shape(graph, scope + scopes[0] + "/")


def _feature_shape(graph, scope):
  """The feature's shape per example, from the input op feeding the column's scope."""
  nodes = {n.name: n for n in graph.node}
  for node in _scope_nodes(graph, scope):
    for name in node.input:
      source, _, index = name.lstrip("^").partition(":")
      if source.startswith(scope) or source not in nodes:
        continue
      shapes = nodes[source].attr["output_shapes"].list.shape
      if shapes:
        dims = [d.size for d in shapes[int(index or 0)].dim]
        if dims and all(d > 0 for d in dims[1:]):
          return tuple(dims[1:])
  return None


def _read_keras(overrides, config, card, common):
  if config is not None:
    shape = tuple(card["input"]["shape"][1:])
    registry_entry = models.REGISTRY[config.model.name]
    source = KerasSource(**common,
                         feature_key="",
                         input_shape=shape,
                         read_from={"architecture": "config"},
                         model_name=config.model.name,
                         logits=registry_entry.logits)
  else:
    if not storage.exists(overrides.keras_model):
      raise UserError(f"--keras_model={overrides.keras_model}: no such file.")
    source = KerasSource(**common,
                         feature_key="",
                         input_shape=(),
                         read_from={"architecture": "--keras_model"},
                         model_file=overrides.keras_model)
  model = source.build_keras_model()
  source.feature_key = model.input_names[0]
  source.input_shape = tuple(model.input_shape[1:])
  source.model_name = source.model_name or model.name
  if config is None:
    # A foreign model ends in softmax, or not: only its last layer says so.
    last = model.layers[-1]
    source.logits = getattr(last, "activation", None) is tf.keras.activations.linear
  logging.info("model_to_estimator: Keras model %s, input %r %s.", source.model_name,
               source.feature_key, source.input_shape)
  return source
