"""ShallowNet on CIFAR-10 with the CIFAR styles tutorial's recipe (SGD 1e-2, momentum 0.9, time
decay, 60 epochs).

Command (needs CIFAR-10 prepared, see README "Data"):
  python -m launch.train --config=configs/cifar_shallownet.py --workdir=runs/cifar_shallownet
Expected: 57-59 % test accuracy (the CIFAR styles tutorial). Time on 2 CPU cores, with
--config.precision=mixed_bfloat16: training ran at 17-18 k img/s here (launch.benchmark on
CIFAR-10-shaped synthetic data, kmodels/docs/performance.md, 2026-11-25), about 3 s per epoch,
4 min for the 60 epochs with evaluation; CIFAR-10 itself cannot be downloaded here.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = "shallownet"
  config.dataset.name = "cifar10"
  config.dataset.augment = base.augmentation(enabled=True)
  config.train.batch_size = 128
  # 16 steps per tf.function call: ShallowNet trained 1.8x faster (Python's per-step cost
  # dominated its 30 ms steps); neutral for the larger models of the CIFAR styles tutorial
  # (BUILD_NOTES).
  config.train.steps_per_execution = 16
  config.train.epochs = 60
  config.train.optimizer.name = "sgd"
  config.train.optimizer.learning_rate = 1e-2
  config.train.optimizer.momentum = 0.9
  # The CIFAR styles tutorial: decay = lr / epochs. A FieldReference keeps it right when epochs is
  # overridden.
  config.train.optimizer.time_decay = (config.train.optimizer.get_ref("learning_rate") /
                                       config.train.get_ref("epochs"))
  return config
