r"""The README's per-CPU speed table: each CIFAR model in float32 and mixed_bfloat16.

  python -m launch.speed_table --workdir=runs/speed_table

Runs `launch.benchmark` once per model and precision, each in a fresh process (synthetic
CIFAR-sized data, one at a time so they don't share the cores), and prints one Markdown
row per model with this CPU's model name and bf16 flags, plus what `precision=auto` picks
here (a fresh benchmark of `auto` would repeat one of the two runs). The float32 run also
measures the reference tutorial's path (ImageDataGenerator + model.fit). Each run's
benchmark.json stays in WORKDIR/<model>-<precision>/.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from kmodels import precision
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Where each run's benchmark.json goes.")
_STEPS = flags.DEFINE_integer("steps", 24, "Timed training steps per run.", lower_bound=1)
_MODELS = {
    "MiniGoogLeNet": "configs/cifar_googlenet.py",
    "MiniVGGNet": "configs/cifar_minivgg.py",
    "ShallowNet": "configs/cifar_shallownet.py"
}
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark(config_file, policy, workdir, steps, reference):
  command = [
      sys.executable, "-m", "launch.benchmark", f"--config={config_file}", f"--workdir={workdir}",
      "--config.dataset.source=synthetic", f"--config.precision={policy}", f"--steps={steps}",
      "--pipeline_batches=20", f"--reference={reference}"
  ]
  print("$", " ".join(command[1:]), flush=True)
  subprocess.run(command, cwd=_REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
  with open(os.path.join(workdir, "benchmark.json")) as f:
    return json.load(f)


def cpu_description():
  """'AMD EPYC (avx512_bf16)': the model name and the native-bf16 flags found."""
  name = "unknown CPU"
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
        break
  native = sorted((precision.cpu_flags() or set()) & {"avx512_bf16", "amx_bf16"})
  return f"{name} ({', '.join(native) or 'no avx512_bf16/amx_bf16'})"


def main(argv):
  del argv
  rows = [
      "| CPU | model | float32 img/s | mixed_bfloat16 img/s | reference path img/s "
      "(float32) | auto picks |", "|---|---|---|---|---|---|"
  ]
  cpu, auto = cpu_description(), precision.choose().precision
  for model, config_file in _MODELS.items():
    runs = {
        policy:
            _benchmark(config_file,
                       policy,
                       os.path.join(_WORKDIR.value, f"{model}-{policy}"),
                       _STEPS.value,
                       reference=policy == "float32") for policy in ("float32", "mixed_bfloat16")
    }
    rows.append(f"| {cpu} | {model} | {runs['float32']['train_images_per_second']:.0f} | "
                f"{runs['mixed_bfloat16']['train_images_per_second']:.0f} | "
                f"{runs['float32']['reference_train_images_per_second']:.0f} | "
                f"{auto} |")
  print("\n".join(rows))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main, flags_parser=common.parse_flags)
