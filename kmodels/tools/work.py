"""Training work of finished runs, in FLOPs: a measure of cost that holds on every machine.

Seconds on shared CPUs differ 2x between two machines of one kind; the work a run did does
not. The work is counted from the run's own records: its model, rebuilt from config.json
with the input shape and classes of its export's model card, and TensorFlow's profiler
counting one image's forward pass (as launch.benchmark counts); training is 3 x forward
per image trained (the backward pass costs about twice the forward), plus the forward
passes that set precise BatchNorm statistics. Per-epoch validation is not training work
and is left out.
"""

from kmodels import models, reporting, serving, trainers
from kmodels import workdir as workdir_lib
from kmodels.errors import UserError
from kmodels.tools import benchmark, evaluation
from kmodels.trainers import keras

# forward + backward: the backward pass of a layer costs about twice its forward
TRAINING_FLOPS_PER_FORWARD = 3


def run_work(workdir_path):
  """The work and result of the finished run in `workdir_path`, as a dict."""
  workdir = workdir_lib.Workdir(workdir_path)
  config = evaluation.load_config(workdir)
  if not trainers.TABLE[config.trainer].registry_model or trainers.is_estimator(config.trainer):
    raise UserError(f"{workdir_path} is a trainer={config.trainer} run: its network is an "
                    "Estimator's, which the profiler cannot count here. Count Keras runs.")
  metrics = reporting.read_json(workdir.metrics, None)
  if not isinstance(metrics, dict) or metrics.get("status") != "completed":
    raise UserError(f"{workdir_path} holds no completed run (metrics.json says "
                    f"{metrics.get('status') if isinstance(metrics, dict) else 'nothing'}). Count "
                    "finished runs.")
  export = workdir.current_export()
  card = serving.read_card(export) if export else None
  if not card:
    raise UserError(f"{workdir_path} has no export with a model card (export/<N>/"
                    f"{serving.MODEL_CARD}), which holds the input shape and classes the "
                    "count needs: count runs that finished under this kmodels.")
  image_shape = tuple(card["input"]["shape"][1:])
  model = models.build_from_config(config.model, image_shape, len(card["label_names"]))
  forward = benchmark.forward_flops_per_image(model, image_shape)
  images = sum(epoch["images"] for epoch in metrics["history"])
  settled = (keras.PRECISE_BATCHNORM_BATCHES *
             config.train.batch_size if keras.settles_batchnorm(model, config) else 0)
  return {
      "workdir": workdir_path,
      "model": config.model.name,
      "forward_mflops_per_image": forward / 1e6,
      "train_images": images,
      "train_tflops": (TRAINING_FLOPS_PER_FORWARD * images + settled) * forward / 1e12,
      "test_accuracy": metrics["test_accuracy"],
      "train_seconds": metrics["train_seconds"]
  }
