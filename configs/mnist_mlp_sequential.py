"""The MNIST styles tutorial: the MLP, Sequential style, on MNIST (Adam, 10 epochs).

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp_sequential.py
  --workdir=runs/mnist_mlp_sequential
Expected: 97.82 % MNIST test accuracy (the MNIST styles tutorial).
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("mlp", "mnist", epochs=10, batch_size=32, arg=arg)
