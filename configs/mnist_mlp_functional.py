"""Seed C: the MLP, Functional style (mnist_model), on MNIST.

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp_functional.py --workdir=runs/mnist_mlp_functional
Expected: 98.06 % MNIST test accuracy (seed C).
"""

from configs import seeds


def get_config(arg=None):
  return seeds.recipe("mlp_functional", "mnist", epochs=10, batch_size=32, arg=arg)
