"""The CIFAR training-loop tutorial: the subclassed CifarModel (ConvolutionLayer/HeadLayer) on
CIFAR-10.

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/cifar_cnn_subclass.py --workdir=runs/cifar_cnn_subclass
Expected: same function class as cifar_cnn_sequential; measured on Fashion-MNIST in
kmodels/docs/models.md.
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("cifar_cnn_subclass", "cifar10", epochs=10, batch_size=128, arg=arg)
