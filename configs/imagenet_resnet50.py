"""ResNet-50 on ImageNet (ILSVRC2012) at 224 px, with the standard large-batch recipe.

Commands (the archives need a manual download from image-net.org; README "Data"):
  python -m launch.prepare_data --dataset=imagenet2012 --archive_dir=DIR_WITH_THE_TARS
  python -m launch.train --config=configs/imagenet_resnet50.py --workdir=gs://BUCKET/resnet50
  # ResNet-50 v2: --config.model.name=resnet50v2
Expected: the published results this recipe aims at are Keras Applications' table:
ResNet50 74.9 % top-1 / 92.1 % top-5, ResNet50V2 76.0 % / 93.0 % on ImageNet validation
(both logged here as test_accuracy / test_top5_accuracy). That needs GPUs or a TPU (about
a day on 8 V100s); kmodels has not run it to the end. On 2 CPU cores the suite trains this
config for 2 steps on synthetic images, and `launch.benchmark` measures its speed.

The recipe (Goyal et al., "Accurate, Large Minibatch SGD", and the Keras/TF model garden):
SGD with momentum 0.9, learning rate 0.1 x global batch / 256 (0.4 at batch 1024), a linear
warm-up over 5 of the 90 epochs, then cosine decay to 0; label smoothing 0.1; weight decay
on the kernels only. Random-resized crops (8-100 % of the area) and flips for training, the
centre 87.5 % for evaluation (dataset.crop defaults).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = "resnet50"
  config.dataset.name = "imagenet2012"  # evaluates on its "validation" split
  config.dataset.image_size = 224
  config.dataset.channels = 3
  config.dataset.download = False  # ImageNet is never downloadable; prepare it first
  config.train.batch_size = 1024  # global: 128 per GPU on 8 GPUs
  config.train.epochs = 90
  config.train.label_smoothing = 0.1
  config.train.checkpoint_every_steps = 1000  # ~0.8 epoch: a preemption loses minutes
  optimizer = config.train.optimizer
  optimizer.name = "sgd"
  optimizer.momentum = 0.9
  optimizer.learning_rate = 0.1
  optimizer.scale_by_batch = True
  optimizer.schedule = "cosine"
  optimizer.warmup_fraction = 5 / 90
  # Decoupled: w -= lr x 1e-3 x w each step. The usual L2 of 1e-4 goes through momentum
  # 0.9, which multiplies its steady-state effect by 1 / (1 - 0.9) = 10.
  optimizer.weight_decay = 1e-3
  config.precision = "auto"  # bf16 on TPUs and CPUs with it, fp16 on GPUs, else float32
  # For GPUs and TPUs. On CPUs pass --config.xla=False: XLA's CPU convolutions made
  # ResNet-50 5x slower there (kmodels warns; measured in BUILD_NOTES).
  config.xla = True
  return config
