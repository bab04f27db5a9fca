"""MiniGoogLeNet on CIFAR-10 on a Cloud TPU (v2/v3/v4-8: 8 replicas).

Command, on the TPU VM (data and workdir on Cloud Storage, which the TPU can read):
  python -m launch.train --config=configs/cifar_googlenet_tpu.py \
      --workdir=gs://BUCKET/runs/g_tpu --config.dataset.data_dir=gs://BUCKET/tensorflow_datasets
Expected: the CIFAR styles tutorial's 86-87 % test accuracy (not measured here: no TPU on the build
machine; tests check that every model's train step compiles with XLA and static shapes).

What changes against cifar_googlenet.py, and why:
- distribution tpu=local: the TPU VM's own chips; give a name or grpc://HOST:8470 for a
  TPU node;
- batch 1024 global (128 per core on 8 cores), learning rate x8 (linear scaling);
- mixed_bfloat16: the TPU's native format, no loss scaling needed;
- xla: the whole step is compiled (a TPU always compiles; this makes CPU/GPU dry runs of
  this config compile the same way);
- steps_per_execution 64: one host call runs many TPU steps.
"""

from configs import cifar_googlenet


def get_config():
  config = cifar_googlenet.get_config()
  config.distribution.strategy = "tpu"
  config.distribution.tpu = "local"
  config.train.batch_size = 1024
  config.train.optimizer.learning_rate = 8e-2
  config.train.steps_per_execution = 64
  config.precision = "mixed_bfloat16"
  config.xla = True
  return config
