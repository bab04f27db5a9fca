r"""Classifies images with a trained run's serving export.

  python -m launch.predict --model=runs/quickstart shoe.png photos/
  python -m launch.predict --model=runs/quickstart/export/2 --top_k=1 --output=pred.csv photos/
  python -m launch.predict --model=runs/quickstart --split=test[:100]    # with accuracy
  python -m launch.predict --model=runs/quickstart --describe            # the model card

--model is a workdir, its export/ directory (both: the highest version, the one a server
serves), one version, or a LiteRT/ONNX file of launch.export (run by its own runtime).
Prints the top-k classes with probabilities for each image. Files go whole through the
export's serving_bytes signature, which decodes them and brings them to the model's input
size and colour mode as a server would; files that are not images are reported and
skipped; exit 2 when none could be read.
"""

import json

from absl import app
from absl import flags
import numpy as np

from kmodels.errors import UserError
from kmodels.tools import predicting
from launch import common

_MODEL = flags.DEFINE_string(
    "model", None, "A launch.train workdir, its export/ directory "
    "(both: the highest version), a version (export/N), or a "
    ".tflite/.onnx file launch.export wrote into one.")
_TOP_K = flags.DEFINE_integer("top_k", 3, "Classes to print per image.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the predictions to FILE.csv|.json.")
_SPLIT = flags.DEFINE_string(
    "split", None, "Predict this split of the run's own dataset "
    "(e.g. test[:100]) and report accuracy; needs a workdir.")
_DESCRIBE = flags.DEFINE_bool("describe", False, "Print the export's model card and exit.")
flags.mark_flag_as_required("model")


def _predict(predictor, paths):
  labels = None
  if _SPLIT.value:
    sources, images, labels = predicting.split_images(_MODEL.value, _SPLIT.value)
    probabilities = predictor.probabilities(images)
  elif paths:
    sources, encoded = predicting.read_files(paths, predictor.max_pixels)
    sources, probabilities = predictor.classify_files(sources, encoded)
  else:
    raise UserError("Name image files or directories to classify, or pass --split=SPLIT "
                    "or --describe.")
  print(f"Model: {predictor.name}", flush=True)
  rows = predicting.top_k_rows(sources, probabilities, predictor.label_names, _TOP_K.value, labels)
  for row in rows:
    print(predicting.format_row(row))
  if labels is not None:
    accuracy = float(np.mean(probabilities.argmax(-1) == labels))
    print(f"accuracy {accuracy:.4f} over {len(labels)} images of {_SPLIT.value}")
  if _OUTPUT.value:
    predicting.write_rows(rows, _OUTPUT.value)
    print(f"Written: {_OUTPUT.value}")


def main(argv):
  # Positional arguments are the images: no common.start(argv) check for stray ones.
  common.start(argv[:1])
  with common.user_errors_exit():
    predictor = predicting.open_model(_MODEL.value)
    if _DESCRIBE.value:
      print(json.dumps(predictor.card or {"model_card": "none in this export"}, indent=2))
      return
    _predict(predictor, argv[1:])


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
