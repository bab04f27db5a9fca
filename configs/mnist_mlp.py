"""The seed C MLP (Flatten -> Dense 256 ReLU -> Dense 10) on MNIST, Adam, 10 epochs.

Command (needs MNIST prepared, see README "Data"; add :fashion_mnist after the file name
for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_mlp.py --workdir=runs/mnist_mlp
Expected: about 98 % MNIST test accuracy (seed C: 97.82 %, Sequential). The same as
configs/mnist_mlp_sequential.py, kept as the foundation issue's name for it.
"""

from configs import seeds


def get_config(arg=None):
  return seeds.recipe("mlp", "mnist", epochs=10, batch_size=32, arg=arg)
