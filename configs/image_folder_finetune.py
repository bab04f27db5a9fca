"""Fine-tune EfficientNetV2-B0 from ImageNet weights on your own image folder at 224 px.

Commands (the weights file once, where there is internet; kmodels never downloads it):
  curl -O https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/efficientnetv2-b0_notop.h5
  python -m launch.train --config=configs/image_folder_finetune.py --workdir=runs/finetune \
      --config.dataset.image_dir=DIR --config.model.weights=efficientnetv2-b0_notop.h5
  # DIR: DIR/train/<class>/*.jpg (and DIR/test/<class>/... or a held-out 10 % of train);
  # MobileNetV2 instead: --config.model.name=mobilenet_v2 with mobilenet_v2's
  # mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
Expected: on flower photos (tf_flowers' 5 classes) transfer learning from ImageNet reaches
about 90 % in a few epochs (Keras' transfer-learning guide and TF's tutorial report 90-95 %);
kmodels has not measured this config on its 2-core CPUs, where one 224-px epoch of 3,300
photos takes minutes; the suite trains it 2 steps on synthetic data with a weights file it
writes in Keras Applications' format.

The recipe of Keras' transfer-learning guide: 2 epochs train only the new head (the
backbone frozen, its BatchNorm in inference mode), then the whole model at a tenth of the
learning rate; Adam, a short warm-up and cosine decay; label smoothing 0.1.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = "efficientnet_v2_b0"
  config.model.weights = "efficientnetv2-b0_notop.h5"  # the file the first command fetches
  config.model.freeze_backbone_epochs = 2
  config.model.dropout = 0.2  # before the new head
  config.dataset.name = "image_folder"
  config.dataset.image_dir = "runs/my_images"  # set yours: --config.dataset.image_dir=DIR
  config.dataset.image_size = 224
  config.dataset.channels = 3
  config.train.batch_size = 32
  config.train.epochs = 10
  config.train.label_smoothing = 0.1
  optimizer = config.train.optimizer
  optimizer.name = "adam"
  optimizer.learning_rate = 1e-3
  optimizer.schedule = "cosine"
  optimizer.warmup_fraction = 0.05
  optimizer.finetune_lr_factor = 0.1
  config.precision = "auto"
  return config
