"""Seed B: the Sequential CNN on CIFAR-10 (Adam 1e-3, batch 128, 10 epochs).

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/cifar_cnn_sequential.py --workdir=runs/cifar_cnn_sequential
Expected: seed B gives no number; measured Fashion-MNIST twin: not yet (issue 3).
"""

from configs import seeds


def get_config(arg=None):
  return seeds.recipe("cifar_cnn_sequential", "cifar10", epochs=10, batch_size=128, arg=arg)
