r"""Exports a run's model off TensorFlow: LiteRT (.tflite, float or quantized) or ONNX.

  python -m launch.export --workdir=runs/quickstart --format=litert --quantize=int8
  python -m launch.export --workdir=runs/quickstart --format=onnx
  python -m launch.export --workdir=runs/quickstart --format=litert --quantize=int8 --qat_steps=200
  python -m launch.export --workdir=gs://B/runs/g --format=litert --version=2 --split=test[:2000]

Converts the run's current export version (or --version), proves the file with its own
runtime in a process without TensorFlow (top-1 on the run's test split, or --split,
against the export's model computed in float32: float files within 0.2 points and 1e-4 per
probability, quantized ones within 1.0 point), and writes it beside the SavedModel in export/<N>/,
listed in that version's model_card.json. Refused (exit 2, the numbers printed, nothing
written) above the bar unless --allow_drop. --measure prints (and writes as
off_tensorflow.md) each file's size, one image's CPU latency and accuracy beside the
SavedModel's. Every file takes raw uint8 pixels and returns probabilities. Where int8
post-training quantization misses its bar, --qat_steps=N fine-tunes a copy of the model for
int8 first (quantization-aware training; the run itself is not touched). Needs the export
extra (`pip install -e .[export]`, current lane).
"""

from absl import app
from absl import flags

from kmodels.errors import UserError
from kmodels.tools import exporting
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished launch.train workdir.")
_FORMAT = flags.DEFINE_string("format", None, "litert or onnx.")
_QUANTIZE = flags.DEFINE_string(
    "quantize", "none", "LiteRT: none (float32), dynamic "
    "(int8 weights), float16, or int8 (full integer, calibrated "
    "on the run's training images).")
_VERSION = flags.DEFINE_integer("version",
                                None,
                                "The export version; default: the current.",
                                lower_bound=1)
_SPLIT = flags.DEFINE_string("split", None, "The proof's split; default: the run's test split.")
_CALIBRATION = flags.DEFINE_integer("calibration_images",
                                    exporting.CALIBRATION_IMAGES,
                                    "int8: training images that set the activation ranges.",
                                    lower_bound=1)
_CALIBRATION_SPLIT = flags.DEFINE_string(
    "calibration_split", None, "int8: the split to "
    "calibrate on; default: the run's training split.")
_MEASURE = flags.DEFINE_bool(
    "measure", False, "Instead of exporting: size, one image's CPU "
    "latency and accuracy of the SavedModel and of each file "
    "exported beside it (a table, also off_tensorflow.md there).")
_QAT_STEPS = flags.DEFINE_integer("qat_steps",
                                  0, "int8: fine-tune a copy of the model this "
                                  "many steps with int8 rounding simulated (quantization-"
                                  "aware training) before converting; 0: post-training only.",
                                  lower_bound=0)
_ALLOW_DROP = flags.DEFINE_bool(
    "allow_drop", False, "Write the file even if it misses the "
    "accuracy bar (the numbers are still recorded).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  common.start(argv)
  if _MEASURE.value:
    with common.user_errors_exit():
      _, table = exporting.measure(_WORKDIR.value, _VERSION.value)
    print(table, flush=True)
    return
  with common.user_errors_exit():
    if not _FORMAT.value:
      raise UserError("--format: litert or onnx (or --measure).")
    entry = exporting.export(
        exporting.Request(workdir=_WORKDIR.value,
                          format=_FORMAT.value,
                          quantize=_QUANTIZE.value,
                          version=_VERSION.value,
                          split=_SPLIT.value,
                          calibration_images=_CALIBRATION.value,
                          calibration_split=_CALIBRATION_SPLIT.value,
                          allow_drop=_ALLOW_DROP.value,
                          qat_steps=_QAT_STEPS.value))
  print(
      f"Exported {entry['path']} ({entry['format']}, {entry['quantization']}, "
      f"{entry['bytes'] / 1e6:.2f} MB): accuracy {100 * entry['accuracy']:.2f} % with "
      f"{entry['runtime']} vs {100 * entry['float32_accuracy']:.2f} % for the model in "
      f"float32 by TensorFlow (the SavedModel: {100 * entry['savedmodel_accuracy']:.2f} %) "
      f"on {entry['split']} ({entry['examples']} images), max probability difference "
      f"{entry['max_probability_difference']:.2g}.",
      flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
