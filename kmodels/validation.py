"""Checks a whole config before any work starts, so mistakes surface in seconds.

Each check names the key, the bad value and what would be accepted. The lists of valid
names come from the modules that implement them, so they cannot drift apart.
"""

from kmodels import data, distribute, models, optimizers, precision, trainers
from kmodels.data import data_service, images, randaugment, sources
from kmodels.errors import UserError
from kmodels.trainers import estimator

DATA_SOURCES = ("tfds", "synthetic")


def _choice(key, value, choices):
  if value not in choices:
    raise UserError(f"{key}={value!r} is not valid. Choose one of: "
                    f"{', '.join(map(str, choices))}.")


def _positive(key, value, allow_none=False):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f"{key} must be a positive integer{' or None' if allow_none else ''}, "
                    f"got {value!r}.")


def _in_range(key, value, low, high, closed_high=False):
  ok = isinstance(
      value, (int, float)) and low <= value and (value <= high if closed_high else value < high)
  if not ok:
    raise UserError(f"{key} must be in [{low}, {high}{']' if closed_high else ')'}, "
                    f"got {value!r}.")


def validate(config):
  """Raises UserError for the first invalid setting in `config`."""
  models.check_name(config.model.name)
  _choice("dataset.source", config.dataset.source, DATA_SOURCES)
  _choice("trainer", config.trainer, trainers.NAMES)
  _choice("distribution.strategy", config.distribution.strategy, tuple(distribute.STRATEGIES))
  _choice("distribution.collective", config.distribution.collective, tuple(distribute.COLLECTIVES))
  _choice("distribution.gpu_memory_growth", config.distribution.gpu_memory_growth,
          distribute.GPU_MEMORY_GROWTH)
  _choice("distribution.cluster", config.distribution.cluster, distribute.CLUSTERS)
  _in_range("distribution.slurm_port_base", config.distribution.slurm_port_base, 1, 65536)
  _choice("precision", config.precision, precision.PRECISIONS)
  _choice("train.optimizer.name", config.train.optimizer.name, tuple(optimizers.OPTIMIZERS))
  for key in ("train.batch_size", "train.epochs", "train.steps_per_execution",
              "train.accumulate_steps", "dataset.shuffle_buffer",
              "dataset.synthetic_train_examples", "dataset.synthetic_eval_examples",
              "distribution.connect_timeout_seconds"):
    _positive(key, _get(config, key))
  _positive("train.steps_per_epoch", config.train.steps_per_epoch, allow_none=True)
  _positive("train.checkpoint_every_steps", config.train.checkpoint_every_steps, allow_none=True)
  _check_profile_steps(config.train.profile_steps)
  _in_range("train.log_every_seconds", config.train.log_every_seconds, 1e-3, float("inf"))
  _choice("train.precise_batchnorm", config.train.precise_batchnorm, (True, False))
  _check_dataset(config.dataset)
  optimizer = config.train.optimizer
  _in_range("train.optimizer.learning_rate", optimizer.learning_rate, 0.0, float("inf"))
  if optimizer.learning_rate == 0:
    raise UserError("train.optimizer.learning_rate must be > 0, got 0.")
  _in_range("train.optimizer.momentum", optimizer.momentum, 0.0, 1.0)
  _in_range("train.optimizer.time_decay", optimizer.time_decay, 0.0, float("inf"))
  _choice("train.optimizer.schedule", optimizer.schedule, optimizers.SCHEDULES)
  _in_range("train.optimizer.warmup_fraction", optimizer.warmup_fraction, 0.0, 1.0)
  _in_range("train.optimizer.weight_decay", optimizer.weight_decay, 0.0, 1.0)
  _in_range("train.label_smoothing", config.train.label_smoothing, 0.0, 1.0)
  if optimizer.clip_global_norm is not None:
    _in_range("train.optimizer.clip_global_norm", optimizer.clip_global_norm, 1e-12, float("inf"))
  if optimizer.ema_momentum is not None:
    _in_range("train.optimizer.ema_momentum", optimizer.ema_momentum, 0.0, 1.0)
  _in_range("train.optimizer.finetune_lr_factor",
            optimizer.finetune_lr_factor,
            1e-9,
            1.0,
            closed_high=True)
  _check_fine_tuning(config)
  if optimizer.schedule == "cosine" and optimizer.time_decay:
    raise UserError("train.optimizer.time_decay and schedule='cosine' both decay the "
                    "learning rate; set time_decay=0 or schedule='constant'.")
  _check_trainer_support(config)
  _check_augmentation(config)


# RandAugment layers beyond this stack so many operations that nothing of the image is left.
MAX_RANDAUGMENT_OPS = 8


def _check_augmentation(config):
  aug = config.dataset.augment
  _in_range("dataset.augment.rotation_degrees", aug.rotation_degrees, 0.0, 180.0, True)
  _in_range("dataset.augment.zoom", aug.zoom, 0.0, 1.0)
  _in_range("dataset.augment.shift", aug.shift, 0.0, 1.0, True)
  _in_range("dataset.augment.shear", aug.shear, 0.0, 90.0)
  ops = aug.randaugment_ops
  if isinstance(ops, bool) or not isinstance(ops, int) or not 0 <= ops <= MAX_RANDAUGMENT_OPS:
    raise UserError(f"dataset.augment.randaugment_ops must be an integer from 0 (off) to "
                    f"{MAX_RANDAUGMENT_OPS}, got {ops!r}; 2 is RandAugment's usual setting.")
  _in_range("dataset.augment.randaugment_magnitude",
            aug.randaugment_magnitude,
            0.0,
            randaugment.MAX_MAGNITUDE,
            closed_high=True)
  for key in ("mixup_alpha", "cutmix_alpha"):
    _in_range(f"dataset.augment.{key}", aug[key], 0.0, 100.0, closed_high=True)


# Above any model's training size; a batch of 8 such RGB images is 1.6 GB of uint8 alone.
MAX_IMAGE_SIZE = 8192


def _check_dataset(dataset):
  """The keys of config.dataset beyond the augmentation's."""
  _choice("dataset.cache", dataset.cache, data.CACHE_POLICIES)
  _positive("dataset.image_size", dataset.image_size, allow_none=True)
  if dataset.image_size is not None and dataset.image_size > MAX_IMAGE_SIZE:
    raise UserError(f"dataset.image_size={dataset.image_size} is more than {MAX_IMAGE_SIZE} "
                    "pixels a side: one such image is gigabytes of activations. Models "
                    "train at 224-512 (ImageNet) or the dataset's own size (None).")
  if dataset.channels is not None:
    _choice("dataset.channels", dataset.channels, (1, 3))
  _positive("dataset.max_image_pixels", dataset.max_image_pixels)
  _in_range("dataset.cache_ram_fraction", dataset.cache_ram_fraction, 0.0, 1.0, True)
  _in_range("dataset.max_bad_fraction", dataset.max_bad_fraction, 0.0, 1.0, True)
  _in_range("dataset.holdout_fraction", dataset.holdout_fraction, 0.01, 0.5, True)
  crop = dataset.crop
  _choice("dataset.crop.policy", crop.policy, images.CROP_POLICIES)
  _in_range("dataset.crop.eval_fraction", crop.eval_fraction, 0.05, 1.0, True)
  for key, bounds, (low, high) in (("area", crop.area, (0.0, 1.0)),
                                   ("aspect_ratio", crop.aspect_ratio, (0.01, 100.0))):
    if (not isinstance(bounds, (tuple, list)) or len(bounds) != 2 or
        not all(isinstance(b, (int, float)) and low < b <= high for b in bounds) or
        bounds[0] > bounds[1]):
      raise UserError(f"dataset.crop.{key} must be (min, max) with {low} < min <= max <= "
                      f"{high}, got {bounds!r}.")
  if dataset.name == sources.IMAGE_FOLDER and not dataset.image_dir:
    raise UserError("dataset.name=image_folder needs dataset.image_dir: a directory laid out "
                    "as DIR/<split>/<class>/*.jpg (--config.dataset.image_dir=DIR).")
  if dataset.service is not None:
    data_service.parse_address(dataset.service)


def _check_profile_steps(steps):
  if steps is None:
    return
  if (len(steps) != 2 or
      not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in steps) or
      steps[0] > steps[1]):
    raise UserError(f"train.profile_steps must be (first, last) training steps with "
                    f"0 < first <= last, e.g. (10, 15); got {steps!r}.")


def _check_fine_tuning(config):
  """model.freeze_backbone_epochs: a count of the first epochs, of a model with a
  backbone, under the fit trainer (the custom loop traces its step once)."""
  epochs = config.model.freeze_backbone_epochs
  if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
    raise UserError(f"model.freeze_backbone_epochs must be an integer >= 0, got {epochs!r}.")
  if not epochs:
    return
  if config.model.name not in models.applications.ARCHITECTURES:
    raise UserError(f"model.freeze_backbone_epochs freezes the backbone of an ImageNet "
                    f"architecture ({', '.join(sorted(models.applications.ARCHITECTURES))}); "
                    f"model {config.model.name!r} has none. Set it to 0.")
  if epochs >= config.train.epochs:
    raise UserError(f"model.freeze_backbone_epochs={epochs} leaves no epoch to fine-tune the "
                    f"whole model in train.epochs={config.train.epochs}; make it smaller.")
  if not trainers.TABLE[config.trainer].finetunes:
    able = [t.name for t in trainers.TABLE.values() if t.finetunes]
    raise UserError(f"model.freeze_backbone_epochs needs trainer={' or '.join(able)} (got "
                    f"{config.trainer!r}); or set it to 0.")


def _check_trainer_support(config):
  """What the trainer table says the trainer supports; Estimators' own checks first."""
  trainer = trainers.TABLE[config.trainer]
  if trainer.estimator:
    estimator.check_config(config)  # first: on the current lane, "removed in 2.16"
  if config.distribution.strategy not in trainer.strategies:
    raise UserError(f"trainer={trainer.name} runs with distribution.strategy "
                    f"{', '.join(trainer.strategies)}; got {config.distribution.strategy!r}.")
  if config.precision not in trainer.precisions:
    raise UserError(f"trainer={trainer.name} trains with precision "
                    f"{' or '.join(trainer.precisions)}{trainer.precision_note}; got "
                    f"{config.precision!r}. Set --config.precision=float32.")
  applied = [
      f"{key}={_get(config, key)!r}" for key, off in trainer.unsupported if _get(config, key) != off
  ]
  if applied:
    able = [t.name for t in trainers.TABLE.values() if not t.unsupported]
    raise UserError(f"trainer={trainer.name} {trainer.unsupported_why}, so it cannot apply "
                    f"{', '.join(applied)}. Unset {'it' if len(applied) == 1 else 'them'}, "
                    f"or use trainer={' or '.join(able)}.")


def _get(config, dotted_key):
  value = config
  for part in dotted_key.split("."):
    value = value[part]
  return value
