"""The MNIST subclassing tutorial: the subclassed ResNet-like model on MNIST (~20 epochs).

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_resnet_like.py --workdir=runs/mnist_resnet_like
Expected: 99.14 % MNIST test accuracy (the MNIST subclassing tutorial); hours on 2 CPU cores.
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("resnet_like", "mnist", epochs=20, batch_size=64, arg=arg)
