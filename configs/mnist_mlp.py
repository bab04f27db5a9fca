"""The MNIST styles tutorial MLP (Flatten -> Dense 256 ReLU -> Dense 10) on MNIST, Adam, 10 epochs.

Command (needs MNIST prepared, see README "Data"; add :fashion_mnist after the file name
for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp.py --workdir=runs/mnist_mlp
Expected: about 98 % MNIST test accuracy (the MNIST styles tutorial: 97.82 %, Sequential). The same
as configs/mnist_mlp_sequential.py, kept as the foundation issue's name for it.
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("mlp", "mnist", epochs=10, batch_size=32, arg=arg)
