"""Shared by the tutorial experiment configs: their recipes and the Fashion-MNIST twin.

Every tutorial config takes an optional argument after a colon; `:fashion_mnist` runs the same
experiment on Fashion-MNIST, which can be prepared offline (README "Data"):
  python -m launch.train --config=configs/mnist_cnnblocks.py:fashion_mnist --workdir=DIR
"""

from configs import base

TWIN_DATASETS = ("fashion_mnist",)


def recipe(model_name, dataset, epochs, batch_size, arg):
  """Adam 1e-3 on `dataset` (or the twin named by `arg`), no augmentation."""
  if arg and arg not in TWIN_DATASETS:
    raise ValueError(f"config argument {arg!r}: use one of {TWIN_DATASETS} or none")
  config = base.get_config()
  config.model.name = model_name
  config.dataset.name = arg or dataset
  config.train.epochs = epochs
  config.train.batch_size = batch_size
  config.train.optimizer.name = "adam"
  config.train.optimizer.learning_rate = 1e-3
  return config
