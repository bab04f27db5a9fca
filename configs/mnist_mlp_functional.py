"""The MNIST styles tutorial: the MLP, Functional style (mnist_model), on MNIST.

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp_functional.py
  --workdir=runs/mnist_mlp_functional
Expected: 98.06 % MNIST test accuracy (the MNIST styles tutorial).
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("mlp_functional", "mnist", epochs=10, batch_size=32, arg=arg)
