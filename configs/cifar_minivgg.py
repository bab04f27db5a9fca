"""MiniVGGNet (subclassed) on CIFAR-10 with seed A's recipe.

Command (needs CIFAR-10 prepared, see README "Data"):
  python -m launch.train --config=configs/cifar_minivgg.py --workdir=runs/cifar_minivgg
Expected: 70-73 % test accuracy (seed A). Time on 2 CPU cores: not measured yet.
"""

from configs import cifar_shallownet


def get_config():
  config = cifar_shallownet.get_config()
  config.model.name = "minivggnet"
  config.model.dropout = 0.5
  return config
