"""The compare_fashion_mnist experiment on CIFAR-10 (the same MLP on 32x32x3 images).

Command (needs CIFAR-10 prepared, see README "Data"):
  python -m launch.compare --config=configs/compare_cifar10.py --workdir=runs/compare_cifar
Expected: not measured here (CIFAR-10 cannot be downloaded on the build machine); an MLP
reaches roughly 45-50 % on CIFAR-10.
"""

from configs import compare_fashion_mnist


def get_config():
  return compare_fashion_mnist.get_config(dataset="cifar10")
