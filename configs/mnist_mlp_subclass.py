"""The MNIST styles tutorial: the MLP, subclassed, on MNIST.

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp_subclass.py --workdir=runs/mnist_mlp_subclass
Expected: 98.20 % MNIST test accuracy (the MNIST styles tutorial).
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("mlp_subclass", "mnist", epochs=10, batch_size=32, arg=arg)
