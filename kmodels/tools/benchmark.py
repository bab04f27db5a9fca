"""Measurements behind `launch.benchmark`: training and input throughput, FLOPs, peak.

Every number is measured in the calling process, on this machine, in one run, so ratios
between them are fair: kmodels' training and input pipeline against the reference path of
the CIFAR styles tutorial (Keras' `ImageDataGenerator` feeding `model.fit`), and the achieved
FLOP/s against
a matmul peak measured right before.
"""

import collections
import gc
import time
from typing import Optional

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import callbacks, cpus, precision, storage, trainers, training
from kmodels.errors import UserError
from kmodels.models import applications
from kmodels.trainers import custom_loop, keras

# The CIFAR styles tutorial's ImageDataGenerator arguments, from the CIFAR-10 Keras tutorial this
# reference path reproduces: the augmentation it trained with.
TUTORIAL_AUGMENTATION = dict(rotation_range=18,
                             zoom_range=0.15,
                             width_shift_range=0.2,
                             height_shift_range=0.2,
                             shear_range=0.15,
                             horizontal_flip=True,
                             fill_mode="nearest")


def matmul_peak_flops(dtype, size=2048, seconds=1.0, trials=3):
  """FLOP/s of a square matmul in `dtype`: this machine's practical dense peak.

  The best of `trials` timings: a peak is what the machine can do, and a single timing
  on 2 shared cores varied by 30 % between runs.
  """
  a = tf.random.uniform([size, size], dtype=tf.float32)
  a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
  matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[0, :1], tf.float32)))
  matmul(a, b).numpy()  # trace and warm up
  best = 0.0
  for _ in range(trials):
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      matmul(a, b).numpy()
      runs += 1
    best = max(best, 2 * size**3 * runs / (time.perf_counter() - start))
  return best


def forward_flops_per_image(model, image_shape):
  """FLOPs of one image's forward pass, counted by TensorFlow's profiler on the graph."""
  spec = tf.TensorSpec([1, *image_shape], tf.float32)
  graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


def _fit_throughput(model, dataset, batch_size, steps, first_step=None):
  """Images/s of model.fit over `steps` steps after a warm-up epoch of the same length."""
  history = callbacks.EpochHistory(None, steps * batch_size)  # the epochs' wall times
  step_callbacks = [history] + ([callbacks.FirstStepCallback(first_step)] if first_step else [])
  model.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=step_callbacks, verbose=0)
  seconds = history.history[1]["seconds"]
  return steps * batch_size / seconds, seconds / steps


def _custom_loop_throughput(model, dataset, config, steps, first_step):
  """Images/s of the custom_loop trainer's step function, after a warm-up of `steps`."""
  train_steps, _ = custom_loop.make_train_steps(model, tf.distribute.get_strategy(), config)
  iterator = iter(dataset)
  per_call = config.train.steps_per_execution
  calls = max(1, steps // per_call)
  for _ in range(2):  # a warm-up pass (tracing, compilation), then the timed one
    start = time.perf_counter()
    for _ in range(calls):
      train_steps(iterator, tf.constant(per_call))
      first_step.step_done()
    float(model.optimizer.iterations)  # waits for the last step
  seconds = time.perf_counter() - start
  return calls * per_call * config.train.batch_size / seconds, seconds / (calls * per_call)


def kmodels_training(model, datasets, config, steps, synthetic_batch, first_step):
  """The configured trainer's throughput: the real pipeline, or one in-memory batch repeated.

  Returns (images/s, seconds per step); `first_step` learns when the first step ended.
  """
  if synthetic_batch:
    images, labels = next(iter(datasets.train))
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  else:
    dataset = datasets.train
  if trainers.TABLE[config.trainer].benchmark_loop == "custom_loop":
    return _custom_loop_throughput(model, dataset, config, steps, first_step)
  return _fit_throughput(model, dataset, config.train.batch_size, steps, first_step)


# Executor bookkeeping events that enclose the op kernels they run (counted once, as ops).
_ENCLOSING_EVENTS = frozenset({"Process", "ParallelFor", "DoCompute", "Root", "Start"})


def op_time_shares(run_steps, logdir, top=12):
  """Share of TensorFlow's op-kernel time per op type while `run_steps()` trains.

  Traced with TensorFlow's profiler (the trace stays in `logdir` for TensorBoard's
  profile tab). Shares are of summed kernel time on TF's compute threads, which can
  overlap: they say where a step goes, not a wall-time split. Returns the `top` op
  types, largest first, and "other" for the rest.
  """
  tf.profiler.experimental.start(logdir)
  try:
    run_steps()
  finally:
    tf.profiler.experimental.stop()
  # Imported here: the profiler's protobufs are only needed when a trace is read.
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  space = xplane_pb2.XSpace()
  traces = [
      storage.join(directory, name)
      for directory, _, files in tf.io.gfile.walk(logdir)
      for name in files
      if name.endswith(".xplane.pb")
  ]
  newest = max(traces, key=lambda path: tf.io.gfile.stat(path).mtime_nsec)
  with tf.io.gfile.GFile(newest, "rb") as f:
    space.ParseFromString(f.read())
  return _shares_by_op_type(space, top)


def _shares_by_op_type(space, top):
  seconds = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      for event in line.events:
        # Kernel events are named "<node name>:<op type>".
        op_type = plane.event_metadata[event.metadata_id].name.rsplit(":", 1)[-1]
        if op_type not in _ENCLOSING_EVENTS:
          seconds[op_type] += event.duration_ps * 1e-12
  total = sum(seconds.values()) or 1.0
  shares = {op: t / total for op, t in seconds.most_common(top)}
  shares["other"] = max(0.0, 1.0 - sum(shares.values()))
  return shares


def check_trainer(config):
  if config.trainer not in trainers.benchmarkable():
    raise UserError(
        f"launch.benchmark measures the Keras trainers ({', '.join(trainers.benchmarkable())}), "
        f"not trainer {config.trainer!r}. launch.compare reports the Estimators' images/s "
        "beside the Keras paths; or pass --config.trainer=fit.")


def _note_one_device(strategy):
  # Per-device speed is what the reference comparison and the peak fraction are about;
  # a multi-device run's images/s is in launch.train's metrics.json.
  if strategy not in ("auto", "default", "one_device"):
    logging.warning(
        "launch.benchmark measures one device: distribution.strategy=%r is not applied. "
        "For images/s over several devices, run launch.train with this config and read "
        "images_per_second in the workdir's metrics.json.", strategy)


def reference_training(model, images, labels, batch_size, steps):
  """The CIFAR styles tutorial's path: ImageDataGenerator.flow feeding model.fit."""
  generator = tf.keras.preprocessing.image.ImageDataGenerator(**TUTORIAL_AUGMENTATION)
  flow = generator.flow(images, labels, batch_size=batch_size, seed=0)
  return _fit_throughput(model, flow, batch_size, steps)


def pipeline_throughput(dataset, batch_size, batches):
  """Images/s of an input pipeline alone (after one warm-up batch)."""
  iterator = iter(dataset)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def reference_pipeline_throughput(images, labels, batch_size, batches):
  generator = tf.keras.preprocessing.image.ImageDataGenerator(**TUTORIAL_AUGMENTATION)
  return pipeline_throughput(generator.flow(images, labels, batch_size=batch_size, seed=0),
                             batch_size, batches)


def raw_training_arrays(datasets, count):
  """`count` unaugmented training images in [0, 1] and their labels, as NumPy arrays."""
  images, labels = [], []
  for batch_images, batch_labels in datasets.eval.unbatch().batch(256):
    images.append(batch_images.numpy())
    labels.append(batch_labels.numpy())
    if sum(len(x) for x in images) >= count:
      break
  images, labels = np.concatenate(images)[:count], np.concatenate(labels)[:count]
  repeats = -(-count // len(images))  # small eval splits: repeat up to `count`
  return np.concatenate([images] * repeats)[:count], np.concatenate([labels] * repeats)[:count]


def _reference_model(config, info):
  # The CIFAR styles tutorial's script as it ran: float32, no XLA, one step per call, the same
  # model and loss.
  reference = config.copy_and_resolve_references()
  with reference.unlocked():
    reference.precision, reference.xla, reference.train.steps_per_execution = "float32", False, 1
  return keras.build_and_compile(reference, info, tf.distribute.get_strategy())


def run(config: ml_collections.ConfigDict,
        *,
        steps: int,
        pipeline_batches: int,
        synthetic_batch: bool,
        with_reference: bool,
        process_start: float,
        op_profile_dir: Optional[str] = None) -> dict:
  """Measures everything for `config`; returns a dict of results.

  With `op_profile_dir`, also traces the trainer's warm-up and timed passes once more
  (2 x `steps` steps) there and adds "op_time_shares" (see `op_time_shares`).
  """
  check_trainer(config)  # first: an Estimator config on the current lane fails validation
  _note_one_device(config.distribution.strategy)
  prepared = training.prepare(config, tf.distribute.get_strategy())
  config, datasets = prepared.config, prepared.datasets
  info, batch = datasets.info, config.train.batch_size
  with precision.policy(config.precision):
    first_step = callbacks.FirstStepTimer()
    model = keras.build_and_compile(config, info, tf.distribute.get_strategy(),
                                    trainers.TABLE[config.trainer].jit_compile)
    images_per_second, step_seconds = kmodels_training(model, datasets, config, steps,
                                                       synthetic_batch, first_step)
    flops = forward_flops_per_image(model, info.image_shape)
    shares = None
    if op_profile_dir:
      shares = op_time_shares(
          lambda: kmodels_training(model, datasets, config, steps, synthetic_batch,
                                   callbacks.FirstStepTimer()), op_profile_dir)
  results = {
      "model": config.model.name,
      "trainer": config.trainer,
      "precision": config.precision,
      "precision_requested": config.precision_requested,
      "xla": config.xla,
      "deterministic": config.train.deterministic,
      "steps_per_execution": config.train.steps_per_execution,
      "batch_size": batch,
      "data": "one in-memory batch" if synthetic_batch else "pipeline",
      "train_images_per_second": images_per_second,
      "step_seconds": step_seconds,
      "pipeline_images_per_second": pipeline_throughput(datasets.train, batch, pipeline_batches),
      "time_to_first_step_seconds": first_step.unix_time - process_start,
      "forward_flops_per_image": flops,
  }
  if with_reference:
    results.update(
        _reference_results(config, datasets, steps, pipeline_batches, images_per_second,
                           results["pipeline_images_per_second"]))
  results.update(_fraction_of_peak(config.precision, flops, images_per_second))
  if with_reference:
    results.update(
        reference_efficiency(flops, results["reference_train_images_per_second"],
                             results["peak_gflops"], results["peak_dtype"]))
  if shares:
    results["op_time_shares"] = shares
  results["peak_rss_mb"] = cpus.peak_rss_mb()
  return results


def input_only(config: ml_collections.ConfigDict, *, batches: int) -> dict:
  """The input pipeline against decoding alone: the same files, CPUs and run.

  `input_fraction_of_decode_limit` near 1 means the pipeline costs little beyond the
  decoding it cannot avoid (a JPEG's crop window may even decode less than the whole
  image, so it can pass 1).
  """
  prepared = training.prepare(config, tf.distribute.get_strategy())
  config, datasets = prepared.config, prepared.datasets
  batch = config.train.batch_size
  pipeline = pipeline_throughput(datasets.train, batch, batches)
  # The same files, from the same opened source: the folder is checked once.
  decode_limit = pipeline_throughput(datasets.make_decoded_train(), 1, batches * batch)
  return {
      "data": datasets.info.name,
      "image_size": config.dataset.image_size,
      "batch_size": batch,
      "train_examples": datasets.info.train_examples,
      "cache": config.dataset.cache,
      "usable_cpus": cpus.usable_cpus(),
      "input_images_per_second": pipeline,
      "decode_limit_images_per_second": decode_limit,
      "input_fraction_of_decode_limit": pipeline / decode_limit,
      "peak_rss_mb": cpus.peak_rss_mb()
  }


def applications_reference_training(config, info, images, labels, steps):
  """What a user writes for an ImageNet architecture: tf.keras.applications' model with
  its own top, compiled with the same optimizer kind and loss, model.fit on the same
  batch repeated, in Keras' defaults (float32, no XLA, one step per call)."""
  constructor = getattr(tf.keras.applications,
                        applications.ARCHITECTURES[config.model.name].keras_name)
  model = constructor(weights=None, input_shape=info.image_shape, classes=info.num_classes)
  optimizer = (tf.keras.optimizers.SGD(0.1, momentum=0.9)
               if config.train.optimizer.name == "sgd" else tf.keras.optimizers.Adam(1e-3))
  model.compile(optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  batch = tf.data.Dataset.from_tensors((images, labels)).repeat()
  return _fit_throughput(model, batch, len(images), steps)


def _reference_results(config, datasets, steps, pipeline_batches, train_speed, pipeline_speed):
  if config.model.name in applications.ARCHITECTURES:
    # The reference for a standard architecture is Keras' own model, not the tutorial's
    # CIFAR pipeline. With --synthetic_batch both train on one batch repeated, so this
    # compares training steps alone.
    images, labels = next(iter(datasets.train))
    train = applications_reference_training(config, datasets.info, images, labels, steps)[0]
    return {
        "reference": "tf.keras.applications + model.fit, one batch repeated",
        "reference_train_images_per_second": train,
        "train_speedup": train_speed / train
    }
  batch = config.train.batch_size
  # Enough images for the warm-up and the timed epoch: a Keras Sequence is not repeated.
  images, labels = raw_training_arrays(datasets, (2 * steps + 1) * batch)
  reference = _reference_model(config, datasets.info)
  train = reference_training(reference, images, labels, batch, steps)[0]
  pipeline = reference_pipeline_throughput(images, labels, batch, pipeline_batches)
  return {
      "reference": "the CIFAR styles tutorial: ImageDataGenerator + model.fit",
      "reference_train_images_per_second": train,
      "reference_pipeline_images_per_second": pipeline,
      "train_speedup": train_speed / train,
      "pipeline_speedup": pipeline_speed / pipeline
  }


def _fraction_of_peak(precision_name, flops, images_per_second):
  """Achieved FLOP/s of training over the matmul peak of the precision's compute dtype.

  Measured last, when no input pipeline threads are left competing for the cores.
  """
  gc.collect()
  peak_dtype = "bfloat16" if precision_name == "mixed_bfloat16" else "float32"
  # Only the peaks the ratios use: float32 (the reference's) and the run's own.
  peaks = {dtype: matmul_peak_flops(getattr(tf, dtype)) for dtype in {"float32", peak_dtype}}
  # A training step costs about three forward passes (forward, two backward products).
  achieved = 3 * flops * images_per_second
  return {
      "achieved_gflops": achieved / 1e9,
      "peak_dtype": peak_dtype,
      "peak_gflops": {
          k: v / 1e9 for k, v in peaks.items()
      },
      "fraction_of_peak": achieved / peaks[peak_dtype]
  }


def reference_efficiency(flops, reference_images_per_second, peak_gflops, peak_dtype):
  """How close the reference runs to the float32 peak, and the speed-up this leaves.

  The reference trains in float32, so its achieved FLOP/s is measured against the float32
  peak. `train_speedup_ceiling` is kmodels' ratio at 100 % of its own precision's peak:
  no engineering of the same model on this machine gets past it. (On a CPU whose bfloat16
  matmuls are 2x its float32 ones, a reference at 80 % of its peak caps the ratio at 2.5x.)
  """
  achieved_gflops = 3 * flops * reference_images_per_second / 1e9
  return {
      "reference_achieved_gflops": achieved_gflops,
      "reference_fraction_of_peak": achieved_gflops / peak_gflops["float32"],
      "train_speedup_ceiling": peak_gflops[peak_dtype] / achieved_gflops
  }
