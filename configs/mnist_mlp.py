"""The seed C MLP (Flatten -> Dense 256 ReLU -> Dense 10) on MNIST, Adam, 10 epochs.

Command (needs MNIST prepared, see README "Data"; on an offline machine run the same
model on Fashion-MNIST with --config.dataset.name=fashion_mnist):
  python -m launch.train --config=configs/mnist_mlp.py --workdir=runs/mnist_mlp
Expected: about 98 % MNIST test accuracy (seed C: 97.82 % Sequential), about 88-89 % on
Fashion-MNIST; under a minute per epoch on 2 CPU cores.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = "mlp"
  config.model.hidden_units = 256
  config.dataset.name = "mnist"
  config.train.batch_size = 32  # Keras' fit default, which seed C used.
  config.train.epochs = 10
  config.train.optimizer.name = "adam"
  config.train.optimizer.learning_rate = 1e-3
  return config
