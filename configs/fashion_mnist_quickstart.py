"""The README quickstart: MiniVGGNet on real Fashion-MNIST, offline, on a laptop CPU.

Command (after `python -m launch.prepare_data --dataset=fashion_mnist
--archive_dir=/usr/share/datasets/fashion-mnist`):
  python -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir=runs/quickstart
Expected: see README / BUILD_NOTES (measured numbers with their command and date).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.name = "minivggnet"
  config.dataset.name = "fashion_mnist"
  config.train.batch_size = 128
  config.train.epochs = 4
  config.train.optimizer.name = "adam"
  config.train.optimizer.learning_rate = 1e-3
  config.precision = "auto"  # bf16 where the CPU has it natively, float32 elsewhere
  return config
