"""A canned Estimator's feature columns, read back from its own tf.Example export.

For users who no longer have the column definitions their training code had: the export
that TF Serving runs (`export_saved_model` with a parsing receiver) holds everything a
checkpoint does not. Its ParseExampleV2 op gives each feature's key, dtype, shape and
default; the ops that consume a feature give the column on it (a lookup table and its
keys or vocabulary file, a hash bucket count, identity bounds, bucket boundaries, a
cross's bucket count and hash key, an embedding combiner); the feature columns' names,
which the Estimator gives its variables and name scopes, give the structure (`x_indicator`,
`x_embedding`, `x_shared_embedding`, `a_X_b`, `x_bucketized`, `x_weighted_by_w`).

What the graph cannot give back is refused naming the column: a numeric column whose
values go through arithmetic (a Python normalizer_fn), a key read by two different
columns of one kind. Then --feature_columns=FILE.py gives the columns instead.
"""

import os

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from kmodels import storage
from kmodels.errors import UserError

fc = tf.feature_column
_DNN_INPUT = "dnn/input_from_feature_columns/input_layer/"
_LINEAR = "linear/linear_model/"
# Ops a feature's values pass through unchanged on their way to a column's transform.
_PASS_THROUGH = {"Identity", "Reshape", "Cast", "ExpandDims", "Squeeze"}
# Arithmetic on a numeric feature's values: a normalizer_fn, Python the graph only ran.
_ARITHMETIC = {
    "RealDiv", "Div", "DivNoNan", "Mul", "Sub", "AddV2", "Add", "Log", "Log1p", "Sqrt", "Rsqrt",
    "Square", "Pow", "Minimum", "Maximum", "ClipByValue", "Tanh", "Sigmoid", "Exp", "Abs", "Neg",
    "FloorDiv", "Floor", "Round", "Sign"
}
_COMBINERS = {"SparseSegmentSum": "sum", "SparseSegmentMean": "mean", "SparseSegmentSqrtN": "sqrtn"}


def find_export(model_dir):
  """The newest export under MODEL_DIR/export (export/<ts>/ or export/<name>/<ts>/)."""
  candidates = [
      os.path.dirname(p)
      for pattern in ("*", "*/*")
      for p in tf.io.gfile.glob(storage.join(model_dir, "export", pattern, "saved_model.pb"))
  ]
  return max(candidates, key=os.path.basename) if candidates else None


class ExportColumns:
  """Reads the columns of the export at `export_dir` (full lane: TF 1 graph loading)."""

  def __init__(self, export_dir):
    self.export_dir = export_dir
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph)
    try:
      with self.graph.as_default():
        self.meta_graph = tf.compat.v1.saved_model.load(self.session, ["serve"], export_dir)
    except (OSError, RuntimeError, ValueError, tf.errors.OpError) as e:
      raise UserError(f"The Estimator export {export_dir} cannot be loaded ({type(e).__name__}"
                      f": {str(e).splitlines()[0]}): pass --feature_columns=FILE.py.") from e
    parses = [op for op in self.graph.get_operations() if op.type == "ParseExampleV2"]
    if len(parses) != 1:
      raise UserError(f"The Estimator export {export_dir} has {len(parses)} tf.Example "
                      "parsing ops (expected the one of a parsing serving_input_receiver_fn):"
                      " pass --feature_columns=FILE.py.")
    self._features = self._parsed_features(parses[0])
    self._assets = self._asset_paths()

  def _parsed_features(self, parse):
    """{key: (values tensor, dtype, shape or None for var-len, default or None)}."""
    sparse_keys, dense_keys = (self._value(parse.inputs[i]) for i in (2, 3))
    num_sparse = len(sparse_keys)
    features = {}
    for i, key in enumerate(sparse_keys):
      features[key.decode()] = (parse.outputs[num_sparse + i], parse.get_attr("sparse_types")[i],
                                None, None)
    for j, key in enumerate(dense_keys):
      default = self._value(parse.inputs[5 + j])
      shape = tuple(tf.TensorShape(parse.get_attr("dense_shapes")[j]).as_list())
      features[key.decode()] = (parse.outputs[3 * num_sparse + j], parse.get_attr("Tdense")[j],
                                shape, default.ravel().tolist() if default.size else None)
    return features

  def _asset_paths(self):
    """{asset tensor name: its file in the export's assets/}."""
    assets = {}
    collection = self.meta_graph.collection_def.get("saved_model_assets")
    for any_proto in (collection.any_list.value if collection else []):
      asset = meta_graph_pb2.AssetFileDef()
      any_proto.Unpack(asset)
      assets[asset.tensor_info.name] = os.path.join(self.export_dir, "assets", asset.filename)
    return assets

  def _value(self, tensor):
    return self.session.run(tensor)

  def head(self):
    """("classifier" | "regressor", the label vocabulary or None)."""
    signatures = self.meta_graph.signature_def
    if "classification" not in signatures:
      return "regressor", None
    try:
      names = self.graph.get_tensor_by_name("head/predictions/class_string_lookup/Const:0")
    except KeyError:
      return "classifier", None
    return "classifier", [v.decode() for v in self._value(names)]

  def sparse_combiner(self):
    """The linear part's sparse_combiner, from its weighted sums' segment op."""
    found = {
        _COMBINERS[op.type]
        for op in self.graph.get_operations()
        if op.type in _COMBINERS and op.name.startswith(_LINEAR) and "/weighted_sum/" in op.name
    }
    return found.pop() if len(found) == 1 else "sum"

  # The columns, from their names.

  def linear_columns(self, checkpoint_names):
    names = sorted(n[len(_LINEAR):-len("/weights")]
                   for n in checkpoint_names
                   if n.startswith(_LINEAR) and n.endswith("/weights"))
    return [self._column(name, _LINEAR) for name in names]

  def dnn_columns(self):
    # DenseFeatures opens each column's variable scope first; its ops land in "<name>_1".
    scopes = {
        op.name[len(_DNN_INPUT):].split("/")[0]
        for op in self.graph.get_operations()
        if op.name.startswith(_DNN_INPUT) and "/" in op.name[len(_DNN_INPUT):]
    }
    names = sorted(s[:-2] for s in scopes if s.endswith("_1"))
    shared = {}  # table variable -> its columns, made together below
    columns = []
    for name in names:
      if name.endswith("_shared_embedding"):
        table = self._shared_table(name)
        shared.setdefault(table, []).append(name)
      else:
        columns.append(self._column(name, _DNN_INPUT))
    for table, members in shared.items():
      columns.extend(self._shared_embeddings(table, members))
    return columns

  def _column(self, name, part):
    if name.endswith("_indicator"):
      return fc.indicator_column(self._categorical(name[:-len("_indicator")]))
    if name.endswith("_embedding"):
      base = name[:-len("_embedding")]
      return fc.embedding_column(self._categorical(base),
                                 self._table_width(f"{part}{name}/embedding_weights"),
                                 combiner=self._combiner(f"{part}{name}_1/"))
    if name in self._features and self._features[name][2] is not None and not (
        self._categorical_uses(name)):
      return self._numeric(name)
    return self._categorical(name)

  def _categorical(self, name):
    if "_weighted_by_" in name:
      base, weight = name.split("_weighted_by_", 1)
      return fc.weighted_categorical_column(self._categorical(base),
                                            weight,
                                            dtype=self._features[weight][1])
    if "_X_" in name:
      return self._crossed(name)
    if name.endswith("_bucketized"):
      return self._bucketized(name[:-len("_bucketized")])
    if name not in self._features:
      raise UserError(f"The Estimator export {self.export_dir} parses no feature {name!r} "
                      "for its column of that name: pass --feature_columns=FILE.py.")
    return self._base_categorical(name)

  def _numeric(self, key):
    _, dtype, shape, default = self._features[key]
    arithmetic = sorted({op.type for op in self._uses(key)} & _ARITHMETIC)
    if arithmetic:
      raise UserError(f"Column {key!r}: its values go through {', '.join(arithmetic)} before "
                      "the network (a normalizer_fn, Python the export cannot give back): "
                      "pass --feature_columns=FILE.py with the column as it was defined.")
    return fc.numeric_column(key, shape=shape, default_value=default, dtype=dtype)

  def _bucketized(self, key):
    boundaries = {
        tuple(op.get_attr("boundaries")) for op in self._uses(key) if op.type == "Bucketize"
    }
    if len(boundaries) != 1:
      raise UserError(f"Column '{key}_bucketized': the export buckets {key!r} in "
                      f"{len(boundaries)} ways: pass --feature_columns=FILE.py.")
    return fc.bucketized_column(self._numeric(key), list(boundaries.pop()))

  def _crossed(self, name):
    crosses = [
        op for op in self.graph.get_operations()
        if op.type.startswith("SparseCross") and f"/{name}" in op.name
    ]
    if not crosses:
      raise UserError(f"Column {name!r}: no SparseCross op in the export: pass "
                      "--feature_columns=FILE.py.")
    cross = crosses[0]
    # The cross hashes its inputs in the op's order (sparse ones first): the order of the
    # original keys, which the column's name (sorted) does not keep.
    count = cross.get_attr("N") if "N" in cross.node_def.attr else 0
    inputs = list(cross.inputs[count:2 * count]) + list(cross.inputs[3 * count:])
    parts = name.split("_X_")
    order = {
        part:
            min((i
                 for i, tensor in enumerate(inputs)
                 if _source_key(part) in self._keys_behind(tensor)),
                default=len(inputs)) for part in parts
    }
    raw_inputs = {t.name for t in inputs}
    keys = []
    for part in sorted(parts, key=order.get):
      raw = part in self._features and self._features[part][0].name in raw_inputs
      keys.append(part if raw else self._categorical(part))
    return fc.crossed_column(keys,
                             cross.get_attr("num_buckets"),
                             hash_key=cross.get_attr("hash_key"))

  def _keys_behind(self, tensor, depth=40):
    """The feature keys whose parsed values flow into `tensor`."""
    values = {t.name: key for key, (t, _, _, _) in self._features.items()}
    found, frontier, seen = set(), [tensor], set()
    while frontier and depth:
      depth -= 1
      next_frontier = []
      for t in frontier:
        if t.name in values:
          found.add(values[t.name])
        elif t.name not in seen:
          seen.add(t.name)
          next_frontier.extend(t.op.inputs)
      frontier = next_frontier
    return found

  def _base_categorical(self, key):
    _, dtype, _, _ = self._features[key]
    uses = self._uses(key)
    finds = [op for op in uses if op.type == "LookupTableFindV2"]
    hashes = [op for op in uses if op.type == "StringToHashBucketFast"]
    if finds:
      return self._vocabulary(key, dtype, finds[0], hashes)
    if hashes:
      return fc.categorical_column_with_hash_bucket(key,
                                                    hashes[0].get_attr("num_buckets"),
                                                    dtype=dtype)
    bounds = [op for op in uses if op.type == "GreaterEqual"]
    if any(op.type == "Less" for op in uses) and bounds:
      return fc.categorical_column_with_identity(key,
                                                 int(self._value(bounds[0].inputs[1])),
                                                 default_value=self._identity_default(bounds[0]))
    raise UserError(f"Column {key!r}: the export reads it with none of a vocabulary, a hash "
                    "bucket or identity ids: pass --feature_columns=FILE.py.")

  def _vocabulary(self, key, dtype, find, hashes):
    table = find.inputs[0].op
    inits = [
        op for op in self.graph.get_operations()
        if op.type in ("LookupTableImportV2",
                       "InitializeTableFromTextFileV2") and op.inputs[0].op is table
    ]
    num_oov = hashes[0].get_attr("num_buckets") if hashes else 0
    default = int(self._value(find.inputs[2]))
    default = -1 if num_oov else default
    init = inits[0]
    if init.type == "InitializeTableFromTextFileV2":
      path = self._assets.get(init.inputs[1].name) or self._value(init.inputs[1]).decode()
      size = init.get_attr("vocab_size")
      return fc.categorical_column_with_vocabulary_file(key,
                                                        path,
                                                        vocabulary_size=size if size > 0 else None,
                                                        num_oov_buckets=num_oov,
                                                        default_value=None if num_oov else default,
                                                        dtype=dtype)
    vocabulary = self._value(init.inputs[1]).tolist()
    if dtype == tf.string:
      vocabulary = [v.decode() for v in vocabulary]
    return fc.categorical_column_with_vocabulary_list(key,
                                                      vocabulary,
                                                      dtype=dtype,
                                                      num_oov_buckets=num_oov,
                                                      default_value=-1 if num_oov else default)

  def _identity_default(self, bound):
    # Out-of-range ids become the default through SelectV2(out of range, Fill(default), ids).
    for op in self.graph.get_operations():
      if op.type == "Fill" and op.name.startswith(bound.name.rsplit("/", 1)[0] + "/"):
        return int(self._value(op.inputs[1]))
    return None

  def _combiner(self, scope):
    found = {
        _COMBINERS[op.type]
        for op in self.graph.get_operations()
        if op.type in _COMBINERS and op.name.startswith(scope)
    }
    return found.pop() if len(found) == 1 else "mean"

  def _shared_table(self, name):
    scope = f"{_DNN_INPUT}{name}_1/"
    for op in self.graph.get_operations():
      if op.name.startswith(scope) and op.type == "ResourceGather":
        return _variable_of(op.inputs[0])
    raise UserError(f"Column {name!r}: no embedding lookup in the export: pass "
                    "--feature_columns=FILE.py.")

  def _shared_embeddings(self, table, names):
    categorical = [self._categorical(n[:-len("_shared_embedding")]) for n in names]
    with tf.Graph().as_default():  # TF 2 makes shared embeddings only in a graph
      return fc.shared_embeddings(categorical,
                                  self._table_width(table),
                                  combiner=self._combiner(f"{_DNN_INPUT}{names[0]}_1/"),
                                  shared_embedding_collection_name=table)

  def _table_width(self, variable):
    """An embedding table's dimension, from its variable's declared shape."""
    shape = self.graph.get_operation_by_name(variable).get_attr("shape")
    return tf.TensorShape(shape).as_list()[1]

  def _uses(self, key):
    """The ops that transform `key`'s values: its consumers, through pass-through ops (and
    AsString, which int ids take on their way to a hash bucket)."""
    found, frontier = [], [self._features[key][0]]
    while frontier:
      tensor = frontier.pop()
      for op in tensor.consumers():
        if op.type in _PASS_THROUGH or op.type == "AsString":
          frontier.extend(op.outputs)
        found.append(op)
    return found

  def _categorical_uses(self, key):
    return [
        op for op in self._uses(key)
        if op.type in ("LookupTableFindV2", "StringToHashBucketFast", "Less")
    ]


def _source_key(part):
  """The feature key a crossed column's part reads: "age" of "age_bucketized"."""
  return part[:-len("_bucketized")] if part.endswith("_bucketized") else part


def _variable_of(handle):
  """The variable name behind a resource handle (through ReadVariableOp/Identity)."""
  op = handle.op
  while op.type != "VarHandleOp" and op.inputs:
    op = op.inputs[0].op
  return op.name
