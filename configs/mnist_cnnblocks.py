"""The MNIST subclassing tutorial: Sequential stack of CNNBlocks 32/64/128, logits, on MNIST (batch
64, 3 epochs).

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/mnist_cnnblocks.py --workdir=runs/mnist_cnnblocks
Expected: 98.75 % MNIST test accuracy (the MNIST subclassing tutorial).
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("cnnblocks", "mnist", epochs=3, batch_size=64, arg=arg)
