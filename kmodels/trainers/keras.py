"""What the Keras trainers (fit, custom_loop) share: building the registry's model, then
evaluating and exporting it after their own training loop."""

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import distribute, memory, models, optimizers, precision, progress, serving
from kmodels.data import mixing
from kmodels.errors import UserError
from kmodels.trainers.run import Outcome


def build_and_compile(config, info, strategy, jit_compile=False):
  """The registry model of `config`, built and compiled in `strategy`'s scope.

  jit_compile: compile the whole train step with XLA (when config.xla; the custom loop
  compiles its own step instead).
  """
  warn_about_xla_on_cpu(config, strategy)
  _check_accumulation(config, info)
  with strategy.scope():
    model = models.build_from_config(config.model, info.image_shape, info.num_classes)
    if config.train.sync_batchnorm:
      layers = models.synchronize_batchnorm(model)
      logging.info(
          "train.sync_batchnorm: %d BatchNorm layers use the global batch's "
          "statistics (all-reduced over %d replicas).", layers, strategy.num_replicas_in_sync)
    optimizer = optimizers.build_optimizer(
        config.train.optimizer,
        optimizers.optimizer_steps(config.train, optimizers.total_steps(config.train, info)),
        config.train.batch_size * config.train.accumulate_steps,
        finetune_from_step=optimizers.optimizer_steps(config.train,
                                                      _finetune_from_step(config, info)),
        accumulate_steps=config.train.accumulate_steps)
    models.compile_classifier(
        model,
        config.model.name,
        optimizer,
        num_classes=info.num_classes,
        label_smoothing=config.train.label_smoothing,
        mixed_targets=mixing.mixes(config.dataset.augment),
        steps_per_execution=config.train.steps_per_execution,
        # Keras' evaluate/predict stay as they are.
        jit_compile=config.xla and jit_compile)
    if config.model.freeze_backbone_epochs or config.train.accumulate_steps > 1:
      # Slots for every weight now, while all are trainable: the head-only epochs would
      # otherwise build the optimizer for the head alone (callbacks.FreezeBackbone); and
      # the accumulators in the strategy's scope, not in a replica's first step.
      optimizers.build_variables(model.optimizer, model.trainable_variables)
  models.summary_model(model, info.image_shape).summary(print_fn=logging.info)
  _check_memory(model, config, info, strategy)
  return model


# Training batches that set the BatchNorm statistics at the end of a run (precise_batchnorm).
PRECISE_BATCHNORM_BATCHES = 32


def settles_batchnorm(model, config):
  """Whether the run ends by measuring `model`'s BatchNorm statistics (settle_batchnorm)."""
  return bool(config.train.precise_batchnorm and models.batchnorm_layers(model))


def settle_batchnorm(model, config, datasets, strategy=None):
  """With train.precise_batchnorm, sets the BatchNorm statistics that evaluation and the
  export use to the final weights' own, measured over training batches.

  Moving averages lag the weights they describe: a ~100-step window (momentum 0.99) of
  weights that kept changing, and Keras' MobileNetV2 (0.999) still holds 37 % of the
  initial mean 0 / variance 1 after 1,000 steps. Measured: fastcnn, 3 epochs of 4,000
  real Fashion-MNIST pictures, 40 % test accuracy with the moving averages (plain Keras
  alike) and 90.4 % with precise statistics. The batches are the run's seeded training
  pipeline, so launch.evaluate sets the same from a checkpoint. A multi-worker job's
  workers would each measure their own: there the moving averages stay (logged).
  """
  if not settles_batchnorm(model, config):
    return
  strategy = strategy or tf.distribute.get_strategy()
  if distribute.is_multi_worker(strategy):
    logging.info("train.precise_batchnorm: not in a multi-worker job; evaluation and the "
                 "export use the BatchNorm moving averages.")
    return
  batches = datasets.make_train(None).take(PRECISE_BATCHNORM_BATCHES).map(lambda x, y: x)
  with strategy.scope():
    seen = models.reestimate_batchnorm(model, batches)
  logging.info(
      "train.precise_batchnorm: BatchNorm statistics of the final weights measured "
      "over %d training batches (instead of the moving averages).", seen)


def _check_accumulation(config, info):
  """A run shorter than one accumulation would never update its weights."""
  steps, every = optimizers.total_steps(config.train, info), config.train.accumulate_steps
  if steps is not None and every > steps:
    raise UserError(f"train.accumulate_steps={every} is more than the run's {steps} training "
                    "steps: the optimizer would never update the weights. Set it to at most "
                    f"{steps}, or train longer (train.epochs, train.steps_per_epoch).")


def _check_memory(model, config, info, strategy):
  """Refuses, before the first step, a batch whose step clearly cannot fit this host's
  memory (CPU replicas share it; a GPU's own memory is met by the ResourceExhaustedError
  handler in `trainer` instead)."""
  devices = distribute.replica_devices(strategy)
  if all("CPU" in d.upper() for d in devices):
    memory.check_fits(model,
                      config.train.batch_size,
                      strategy.num_replicas_in_sync,
                      info.image_shape,
                      local_replicas=max(len(devices), 1))


def _finetune_from_step(config, info):
  """The first step that trains the whole model after a frozen backbone, or None."""
  if not config.model.freeze_backbone_epochs:
    return None
  return config.model.freeze_backbone_epochs * optimizers.steps_per_epoch(config.train, info)


def warn_about_xla_on_cpu(config, strategy):
  """XLA's CPU backend convolves without oneDNN: convolutional nets slow down a lot."""
  devices = distribute.replica_devices(strategy)
  if config.xla and all("CPU" in d.upper() for d in devices):
    logging.warning(
        "xla=True on CPUs: XLA compiles convolutions without oneDNN; MiniVGGNet trained "
        "10x and ResNet-50 at 224 5x slower with it than without (kmodels/docs/"
        "measurements.md, \"Speed\" and \"ResNet-50 at 224\"). It pays off on GPUs and "
        "TPUs; on this machine use --config.xla=False.")


def trainer(train_loop):
  """A train function (Run -> Outcome) around `train_loop(run)`, a Keras trainer's own
  loop: builds and compiles the model before it, evaluates and exports after it."""

  def train(run):
    with precision.policy(run.config.precision):
      model = build_and_compile(run.config, run.datasets.info, run.strategy,
                                run.trainer.jit_compile)
      try:
        train_loop(run._replace(model=model))
      except tf.errors.ResourceExhaustedError as e:
        if not memory.is_out_of_memory(e):  # a full disk is faults' to report
          raise
        raise memory.refused_after(e, run.config.train.batch_size,
                                   run.strategy.num_replicas_in_sync,
                                   run.datasets.info.image_shape) from e
      settle_batchnorm(model, run.config, run.datasets, run.strategy)
      every, split = run.config.train.log_every_seconds, run.config.dataset.eval_split
      results = model.evaluate(
          run.datasets.eval,
          verbose=0,
          return_dict=True,
          callbacks=[progress.BatchCountdown(f"Testing on {split}", run.datasets.eval, every)])
      test_loss, test_accuracy = results["loss"], results["accuracy"]
      # argmax is the same on logits and on probabilities.
      classes = np.argmax(model.predict(
          run.datasets.eval,
          verbose=0,
          callbacks=[progress.BatchCountdown(f"Predicting {split}", run.datasets.eval, every)]),
                          axis=-1)
      # Equal on every worker of a healthy multi-worker job; a quick check for users too.
      logging.info("Weights fingerprint (sum of |w|): %r", weights_fingerprint(model))
      with serving.new_version(run.workdir.export, run.strategy,
                               run.workdir.export_versioned) as slot:
        serving.export_keras(model,
                             run.datasets.info,
                             slot,
                             serving.Card.from_config(run.config, float(test_accuracy),
                                                      run.config.model.name),
                             logits=models.REGISTRY[run.config.model.name].logits,
                             warmup_images=run.datasets.first_eval_images(serving.WARMUP_IMAGES))
    top5 = results.get("top5_accuracy")
    return Outcome(float(test_loss), float(test_accuracy), classes, model.count_params(),
                   None if top5 is None else float(top5))

  return train


def weights_fingerprint(model):
  return float(sum(np.abs(w.astype(np.float64)).sum() for w in model.get_weights()))
