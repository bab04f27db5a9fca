"""Every kmodels setting and its default; experiment configs import this and change a few.

Command (a small smoke run on random data, no dataset needed):
  python -m launch.train --config=configs/base.py --workdir=/tmp/kmodels/base \
      --config.dataset.source=synthetic
Expected: runs in well under a minute on 2 CPU cores; accuracy is chance (random data).

The keys below are the public contract that docs and tests rely on. Defaults live here
and nowhere else: the trainer reads every key and never guesses a fallback.
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = "shallownet"  # registry name; other model.* keys are builder kwargs
  # ImageNet architectures only: a Keras Applications "notop" .h5 backbone file (local or
  # gs://) to start from; never downloaded at run time.
  config.model.weights = config_dict.placeholder(str)
  # Fine-tuning (ImageNet architectures, trainer fit): train only the new head for this
  # many epochs (the backbone frozen, its BatchNorm in inference mode), then the whole
  # model at learning rate x train.optimizer.finetune_lr_factor.
  config.model.freeze_backbone_epochs = 0

  config.dataset = ml_collections.ConfigDict()
  # a tfds name (fashion_mnist, cifar10, tf_flowers, imagenet2012, ...) or image_folder
  config.dataset.name = "fashion_mnist"
  config.dataset.source = "tfds"  # tfds | synthetic (random data, the dataset's shapes)
  config.dataset.data_dir = config_dict.placeholder(str)  # None: tfds' default directory
  # image_folder: DIR/<split>/<class>/*.{jpg,png,...}, local or gs://, or the records
  # launch.prepare_data --dataset=image_folder wrote from such a folder
  config.dataset.image_dir = config_dict.placeholder(str)
  config.dataset.download = True  # download when not prepared (needs internet)
  config.dataset.train_split = "train"
  # A tfds dataset without "test" evaluates on "validation", else on the last
  # holdout_fraction of train (which training then does not see).
  config.dataset.eval_split = "test"
  config.dataset.holdout_fraction = 0.1
  # None: a fixed-size dataset's own size; N: train and evaluate at N x N (any dataset)
  config.dataset.image_size = config_dict.placeholder(int)
  config.dataset.channels = config_dict.placeholder(int)  # 1 | 3; None: the dataset's (folders: 3)
  config.dataset.crop = ml_collections.ConfigDict(
      dict(
          # auto: imagenet (the keys below) for images from 128 px over runs of 30 epochs or
          # more, else resize (the whole image resized, train and eval alike, no flips, as
          # Keras' image_dataset_from_directory); square: the centre square resized, likewise;
          # kmodels.data.images.crop_policy.
          policy="auto",
          area=(0.08, 1.0),  # training: random-resized crop's share of the image's area
          aspect_ratio=(0.75, 4 / 3),  # and its width/height range
          eval_fraction=0.875))  # evaluation and serving: centre square of this x shorter side
  config.dataset.cache = "auto"  # auto (in memory if it fits cache_ram_fraction) | memory | none
  config.dataset.cache_ram_fraction = 0.25  # share of usable RAM for cache + shuffle buffer
  config.dataset.max_bad_fraction = 0.01  # image folders: refuse the run above this share
  config.dataset.max_image_pixels = 100_000_000  # files declaring more are refused (bombs);
  # the same as kmodels.data.images.DEFAULT_MAX_PIXELS, what launch.predict uses for older exports
  config.dataset.service = config_dict.placeholder(str)  # grpc://HOST:PORT of a tf.data service
  config.dataset.shuffle_buffer = 10_000
  config.dataset.synthetic_train_examples = 1024
  config.dataset.synthetic_eval_examples = 256
  config.dataset.augment = augmentation(enabled=False)

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128  # global, over all replicas
  config.train.epochs = 1
  config.train.steps_per_epoch = config_dict.placeholder(int)  # None: one pass over train
  config.train.steps_per_execution = 1  # steps per tf.function call (fewer Python round trips)
  # Gradient accumulation: the optimizer updates once per this many steps, with their mean
  # gradient (N steps of batch_size update as one step of N x batch_size would, in the
  # memory of one); learning-rate schedules count updates. Keras trainers only.
  config.train.accumulate_steps = 1
  # Also checkpoint (and write TensorBoard scalars) every N steps within an epoch; None:
  # at epoch ends only. A kill then loses at most N steps.
  config.train.checkpoint_every_steps = config_dict.placeholder(int)
  # (first, last) training steps to trace with TensorFlow's profiler, e.g. (10, 15): a trace
  # under WORKDIR/tensorboard/plugins/profile for TensorBoard's profile tab. None: off.
  config.train.profile_steps = config_dict.placeholder(tuple)
  # Where the output is not a terminal (a cloud job's log, a file): a progress line every
  # this many seconds and at each epoch's last step (epoch, step, loss and accuracy so far,
  # images/s, the epoch's remaining time). A terminal gets Keras' progress bar instead.
  config.train.log_every_seconds = 60.0
  # Evaluate and export with BatchNorm statistics measured for the final weights over 32
  # training batches, not the moving averages that lag them (a short run: 40 % -> 90 %).
  config.train.precise_batchnorm = True
  config.train.seed = 0
  # Bit-identical reruns (tf.config.experimental.enable_op_determinism); cost: README.
  config.train.deterministic = False
  config.train.label_smoothing = 0.0  # targets (1 - e) on the label + e / classes on each
  # BatchNorm statistics over the global batch instead of each replica's share
  config.train.sync_batchnorm = False
  config.train.optimizer = ml_collections.ConfigDict()
  config.train.optimizer.name = "adam"  # adam | sgd
  config.train.optimizer.learning_rate = 1e-3
  config.train.optimizer.momentum = 0.0  # sgd only
  config.train.optimizer.time_decay = 0.0  # lr / (1 + time_decay * step); 0 disables
  # constant (with time_decay) | cosine: warm-up from lr/10, then cosine decay to 0
  config.train.optimizer.schedule = "constant"
  config.train.optimizer.warmup_fraction = 0.05  # cosine: share of the run spent warming up
  config.train.optimizer.scale_by_batch = False  # learning_rate x global batch / 256
  config.train.optimizer.weight_decay = 0.0  # decoupled (SGDW/AdamW); 0 disables
  config.train.optimizer.weight_decay_everything = False  # also biases and norm scales
  config.train.optimizer.clip_global_norm = config_dict.placeholder(float)  # None: no clip
  # Keep an exponential moving average of the weights (e.g. 0.9999); evaluation and the
  # export use the average. None: off.
  config.train.optimizer.ema_momentum = config_dict.placeholder(float)
  # After model.freeze_backbone_epochs: the learning rate's factor for the whole model
  config.train.optimizer.finetune_lr_factor = 0.1

  # fit (Keras model.fit) | custom_loop (GradientTape, the CIFAR training-loop tutorial) |
  # estimator (DNNClassifier)
  # | keras_estimator (model.name through model_to_estimator); the last two: full lane only
  config.trainer = "fit"
  config.estimator = ml_collections.ConfigDict()
  # trainer=estimator's canned Estimator on the pixels: dnn (DNNClassifier) | linear
  # (LinearClassifier, the linear baseline) | dnn_linear_combined (wide & deep: both parts)
  config.estimator.canned = "dnn"
  # DNN layers: one of 256, as the MNIST styles tutorial's MLP.
  config.estimator.hidden_units = (256,)
  config.distribution = ml_collections.ConfigDict()
  # auto (a TPU if configured or attached, mirrored over 2+ GPUs, else default) | default
  # | one_device | mirrored (one host) | multi_worker (TF_CONFIG) | tpu
  config.distribution.strategy = "auto"
  config.distribution.devices = config_dict.placeholder(str)  # "cpu:0,cpu:1"; None: all GPUs
  config.distribution.collective = "auto"  # multi_worker all-reduce: auto | ring | nccl
  # multi_worker's cluster: auto (TF_CONFIG if set, else a Slurm job step) | tf_config | slurm
  config.distribution.cluster = "auto"
  config.distribution.slurm_port_base = 8888  # slurm: task i of a node listens on base + i
  # GPUs take memory as needed instead of nearly all at start: on | off | auto (on when
  # another task of TF_CONFIG's cluster shares this host)
  config.distribution.gpu_memory_growth = "auto"
  # tpu: "local" on a Cloud TPU VM, the TPU's name, or "grpc://HOST:8470".
  config.distribution.tpu = config_dict.placeholder(str)
  config.distribution.connect_timeout_seconds = 60  # give up on a TPU that never answers
  # auto (fast on this hardware: kmodels/precision.py) | float32 | mixed_float16 | mixed_bfloat16
  config.precision = "auto"
  config.xla = False  # compile the train step with XLA (jit_compile)
  return config


def augmentation(enabled,
                 rotation_degrees=18.0,
                 zoom=0.15,
                 shift=0.2,
                 shear=0.15,
                 horizontal_flip=True,
                 randaugment_ops=0,
                 randaugment_magnitude=9,
                 mixup_alpha=0.0,
                 cutmix_alpha=0.0):
  """Augmentation of training batches, in this order (all seeded by the training step, so
  a resumed run sees the unbroken run's batches):

  randaugment_ops: RandAugment's operations per image (0: off; 2 is the paper's), at
    randaugment_magnitude (0-10); kmodels/data/randaugment.py.
  enabled: the random affine warp below, at the CIFAR styles tutorial's strengths.
  mixup_alpha, cutmix_alpha: MixUp / CutMix with lambda ~ Beta(alpha, alpha) (0: off;
    0.2 and 1.0 are common); the labels are mixed in the same shares
    (kmodels/data/mixing.py). Keras trainers only.
  """
  return ml_collections.ConfigDict(
      dict(enabled=enabled,
           rotation_degrees=rotation_degrees,
           zoom=zoom,
           shift=shift,
           shear=shear,
           horizontal_flip=horizontal_flip,
           randaugment_ops=randaugment_ops,
           randaugment_magnitude=randaugment_magnitude,
           mixup_alpha=mixup_alpha,
           cutmix_alpha=cutmix_alpha))
