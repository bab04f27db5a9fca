r"""Seconds to convert untrained registry models to LiteRT and ONNX.

(kmodels/docs/measurements.md "Conversion times")

  .venv-current/bin/python -m launch.conversion_times --models=mobilenet_v2,resnet50

For each model (float32, 32x32x3, 10 classes) and target: the seconds of one conversion
as launch.export does it (the graph frozen first) and, for LiteRT, as the converter does
it when handed the live model (it saves a SavedModel first). Needs the export extra.
"""

import time

from absl import app
from absl import flags

from kmodels import runtime
from launch import common

_MODELS = flags.DEFINE_list("models", ["mobilenet_v2", "resnet50"], "Registry model names.")
_SIZE = flags.DEFINE_integer("size", 32, "Image side in pixels.", lower_bound=1)


def _seconds(function):
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def main(argv):
  del argv
  runtime.configure()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after runtime.configure)
  from kmodels import models, precision  # pylint: disable=g-import-not-at-top
  from kmodels.tools import exporting  # pylint: disable=g-import-not-at-top
  shape = (_SIZE.value, _SIZE.value, 3)
  print("| model | LiteRT, frozen (s) | LiteRT, live model (s) | ONNX, frozen (s) |")
  print("|---|---|---|---|")
  for name in _MODELS.value:
    with precision.policy("float32"):
      model = models.build_model(name, shape, 10)
    probabilities = exporting.probabilities_function(model, shape, models.REGISTRY[name].logits)
    live = tf.lite.TFLiteConverter.from_concrete_functions([probabilities.get_concrete_function()],
                                                           model)
    print(
        f"| {name} | {_seconds(lambda: exporting.convert(probabilities, 'litert')):.1f} | "
        f"{_seconds(live.convert):.1f} | "
        f"{_seconds(lambda: exporting.convert(probabilities, 'onnx')):.1f} |",
        flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
