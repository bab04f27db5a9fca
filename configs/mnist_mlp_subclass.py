"""Seed C: the MLP, subclassed, on MNIST.

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp_subclass.py --workdir=runs/mnist_mlp_subclass
Expected: 98.20 % MNIST test accuracy (seed C).
"""

from configs import seeds


def get_config(arg=None):
  return seeds.recipe("mlp_subclass", "mnist", epochs=10, batch_size=32, arg=arg)
