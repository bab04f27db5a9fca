"""MiniGoogLeNet on CIFAR-10 with the CIFAR styles tutorial's recipe (SGD, time decay,
augmentation, 60 epochs).

Command (needs CIFAR-10 prepared, see README "Data"):
  python -m launch.train --config=configs/cifar_googlenet.py --workdir=runs/cifar_googlenet
Expected: 86-87 % test accuracy (the CIFAR styles tutorial, ~60 s/epoch on its author's GPU). On 2
CPU cores expect hours: with --config.precision=mixed_bfloat16 (use it on CPUs with bf16)
training ran at 389-411 img/s here (launch.benchmark on CIFAR-10-shaped synthetic data,
kmodels/docs/performance.md, 2026-11-25), about 2 min per epoch, 2 h for the 60 epochs.
"""

from configs import cifar_shallownet


def get_config():
  config = cifar_shallownet.get_config()
  config.model.name = "minigooglenet"
  config.model.dropout = 0.5
  return config
