"""MiniVGGNet (subclassed) on CIFAR-10 with the CIFAR styles tutorial's recipe.

Command (needs CIFAR-10 prepared, see README "Data"):
  python -m launch.train --config=configs/cifar_minivgg.py --workdir=runs/cifar_minivgg
Expected: 70-73 % test accuracy (the CIFAR styles tutorial). Time on 2 CPU cores, with
--config.precision=mixed_bfloat16: training ran at 3.8-4.1 k img/s here (launch.benchmark
on CIFAR-10-shaped synthetic data, kmodels/docs/performance.md, 2026-11-25), about 13 s per epoch,
15 min for the 60 epochs; CIFAR-10 itself cannot be downloaded on the build machine.
"""

from configs import cifar_shallownet


def get_config():
  config = cifar_shallownet.get_config()
  config.model.name = "minivggnet"
  config.model.dropout = 0.5
  return config
