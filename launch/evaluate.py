r"""Re-evaluates a finished or interrupted run on any split, from any of its checkpoints.

  python -m launch.evaluate --workdir=runs/quickstart
  python -m launch.evaluate --workdir=runs/quickstart --split=train[:10%] --checkpoint=latest
  python -m launch.evaluate --workdir=runs/loop --checkpoint=best   # custom_loop runs

Writes WORKDIR/evaluation/<split>/: metrics.json, classification_report.txt and
confusion_matrix.png (with the class names), and prints the metrics.
"""

from absl import app
from absl import flags

from kmodels.tools import evaluation
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (as given to launch.train).")
_SPLIT = flags.DEFINE_string(
    "split", None, "tfds split, e.g. test, train[:10%]; default: "
    "the run's dataset.eval_split.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest",
                                  "latest | best (custom_loop runs) | a checkpoint path.")
flags.mark_flag_as_required("workdir")


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    metrics = evaluation.evaluate(_WORKDIR.value, _SPLIT.value, _CHECKPOINT.value)
  print(
      f"{metrics['dataset']} {metrics['split']}: accuracy {metrics['accuracy']:.4f}, "
      f"loss {metrics['loss']:.4f} over {metrics['examples']} examples "
      f"(checkpoint {metrics['checkpoint']}).\nWritten: metrics.json, "
      f"classification_report.txt, confusion_matrix.png in {metrics['directory']}",
      flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
