"""The CIFAR training-loop tutorial: the Sequential CNN on CIFAR-10 (Adam 1e-3, batch 128, 10
epochs).

Command (add :fashion_mnist after the file name for the offline Fashion-MNIST twin):
  python -m launch.train --config=configs/cifar_cnn_sequential.py
  --workdir=runs/cifar_cnn_sequential
Expected: the CIFAR training-loop tutorial gives no number; measured Fashion-MNIST twin: README
"Models".
"""

from configs import tutorials


def get_config(arg=None):
  return tutorials.recipe("cifar_cnn_sequential", "cifar10", epochs=10, batch_size=128, arg=arg)
