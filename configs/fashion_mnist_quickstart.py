"""The README quickstart: a small CNN on real Fashion-MNIST, offline, on a laptop CPU.

Command (after `python -m launch.prepare_data --dataset=fashion_mnist
--archive_dir=/usr/share/datasets/fashion-mnist`; `bash launch/quickstart.sh` does both):
  python -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir=runs/quickstart
Expected: >= 90 % test accuracy in <= 180 s of training on every CPU kind in the README's
table (measured numbers there, with the command, CPU and date).

The recipe is configs/fashion_mnist_fast.py's (fastcnn, batch 256, Adam 3e-3 with warm-up
and cosine decay), chosen by measurement over the tutorial's MiniVGGNet, which needed 4
epochs and 323 s on a 2-core AVX2-only CPU for 91.26 % (kmodels/docs/measurements.md
"The quickstart's work").
"""

from configs import fashion_mnist_fast


def get_config():
  config = fashion_mnist_fast.get_config()
  config.train.epochs = 2
  config.train.steps_per_epoch = 225
  return config
