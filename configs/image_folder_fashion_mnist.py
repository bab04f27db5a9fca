"""Real pictures from a folder: Fashion-MNIST written as JPEG/PNG files of mixed sizes
(0.75x to 3x), colour modes (grey, RGB, RGBA) and formats, trained at 32x32 grey.

Commands (after preparing Fashion-MNIST, README "Data"):
  python -m launch.write_image_folder --dataset=fashion_mnist --out=runs/fm_folder \
      --mixed --train_examples=20000 --test_examples=5000
  python -m launch.train --config=configs/image_folder_fashion_mnist.py \
      --workdir=runs/fm_folder_run      # another folder: --config.dataset.image_dir=DIR
Expected: see README "Results" (accuracy, time, the machine and the date).

Choices: the fashion_mnist_fast recipe (fastcnn, batch 256, Adam 3e-3 with warm-up and
cosine decay); random-resized crops of at least 25 % of the image (ImageNet's 8 % leaves
a few pixels of a 28-pixel garment), and the centre 87.5 % for evaluation.
"""

from configs import fashion_mnist_fast


def get_config():
  config = fashion_mnist_fast.get_config()
  config.dataset.name = "image_folder"
  config.dataset.image_dir = "runs/fm_folder"  # what the first command above writes
  config.dataset.image_size = 32
  config.dataset.channels = 1
  # Measured with ImageNet-style crops (README Results); the auto policy would take the
  # centre square at 32 px (README "Against plain Keras" compares the two).
  config.dataset.crop.policy = "imagenet"
  config.dataset.crop.area = (0.25, 1.0)
  config.train.epochs = 6
  return config
