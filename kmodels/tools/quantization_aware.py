"""Quantization-aware fine-tuning, for the int8 files post-training quantization cannot make.

`launch.export --format=litert --quantize=int8 --qat_steps=N` fine-tunes a copy of the
export's model for N steps on the run's own training pipeline with fake-quantization
inserted (tensorflow-model-optimization's `quantize_model`), so the weights learn to live
with int8 rounding and each activation's range is learned rather than calibrated; the
converter then reads those ranges. The run's checkpoints and SavedModel are not touched:
the fine-tuned copy lives only in the exported file, whose proof compares it with the
model as trained.

tfmot rewrites Sequential and functional models layer by layer, so subclassed models
(whose layers it cannot see) and layers it has no quantization recipe for are refused, and
so are models with BatchNorm: tfmot keeps each apart from its convolution, and the
converted file of a fine-tuned fastcnn scored 56 % where post-training int8 kept 89.6 %.
"""

from absl import logging
import tensorflow as tf

from kmodels import data, models
from kmodels.errors import UserError, first_line

# Fine-tuning continues from trained weights: a learning rate of a converged run's last
# steps, so the weights adapt to the rounding without moving away from the trained model.
LEARNING_RATE = 1e-4


def check_installed():
  try:
    import tensorflow_model_optimization  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise UserError("--qat_steps needs tensorflow-model-optimization (the export extra, on "
                    "the current lane: `LANE=current bash launch/setup.sh`).") from e


def annotated(model, model_name):
  """`model` with fake-quantization around each layer, or a UserError saying why not."""
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  if models.is_subclassed(model):
    raise UserError(f"--qat_steps: {model_name} is a subclassed model, whose layers "
                    "quantization-aware training cannot see; it takes Sequential and "
                    "functional models (e.g. the same network's _functional twin).")
  if models.batchnorm_layers(model):
    raise UserError(f"--qat_steps: {model_name} has BatchNorm layers, which quantization-"
                    "aware training here keeps apart from their convolutions, and the "
                    "converted file then misses by far (fastcnn: 56 % after fine-tuning, "
                    "where its float32 model scored 89.7 % and post-training int8 89.6 %). "
                    "It takes models without BatchNorm; use post-training int8 "
                    "(--quantize=int8 alone) or --quantize=dynamic.")
  try:
    return tfmot.quantization.keras.quantize_model(model)
  except (ValueError, RuntimeError, TypeError) as e:
    raise UserError(f"--qat_steps: quantization-aware training cannot wrap {model_name}: "
                    f"{first_line(e)}") from e


def fine_tune(model, config, steps):
  """A fake-quantized copy of `model` trained `steps` steps on the run's training split."""
  quantized = annotated(model, config.model.name)
  models.compile_classifier(quantized,
                            config.model.name,
                            tf.keras.optimizers.Adam(LEARNING_RATE),
                            label_smoothing=config.train.label_smoothing)
  datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
  logging.info("Quantization-aware fine-tuning: %d steps of batch %d on %s's %s split, "
               "Adam %g.", steps, config.train.batch_size, datasets.info.name,
               config.dataset.train_split, LEARNING_RATE)
  history = quantized.fit(datasets.make_train(None), steps_per_epoch=steps, epochs=1, verbose=2)
  logging.info("Quantization-aware fine-tuning done: training accuracy %.4f with int8 "
               "rounding.", history.history["accuracy"][-1])
  return quantized
