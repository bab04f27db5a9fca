"""MiniGoogLeNet on CIFAR-10 over every GPU of one host (MirroredStrategy), or over several
hosts with --config.distribution.strategy=multi_worker and TF_CONFIG set on each.

Command (needs CIFAR-10 prepared, see README "Data" and kmodels/docs/scale.md):
  python -m launch.train --config=configs/cifar_googlenet_multigpu.py --workdir=runs/g_multi
Expected: the CIFAR styles tutorial's 86-87 % test accuracy; images/s grows with the GPUs (not
measured here:
no GPU can run TensorFlow on the build machine).

What changes against cifar_googlenet.py, and why:
- batch 512 global (128 per GPU on 4 GPUs): each GPU keeps the batch the CIFAR styles tutorial used;
- learning rate x4 (linear scaling with the batch), time decay kept at lr / epochs;
- precision auto: mixed_bfloat16 on GPUs of compute capability >= 8.0, mixed_float16 (with
  automatic loss scaling) on 7.x, and no float16 on a CPU, where it crawls;
- steps_per_execution 16: fewer host round trips per step.
"""

from configs import cifar_googlenet


def get_config():
  config = cifar_googlenet.get_config()
  config.distribution.strategy = "mirrored"
  config.train.batch_size = 512
  config.train.optimizer.learning_rate = 4e-2
  config.train.steps_per_execution = 16
  config.precision = "auto"
  return config
