"""Every strategy x trainer x precision trains or is refused, as kmodels/docs/scale.md says.

Strategies: default, one_device, mirrored over 1 and over 2 logical CPUs, multi_worker with
two localhost processes, tpu (no TPU here). Trainers: fit, custom_loop, estimator,
keras_estimator. Precisions: auto, float32, mixed_bfloat16, mixed_float16. A cell that
trains must finish and write its outputs; a refused one must raise UserError (exit 2 in
the launchers) before its workdir exists. Anything else (a crash, a half run) fails.

Each cell's outcome is compared with the table published in kmodels/docs/scale.md, which
was written on the full lane on a CPU with native bf16. Two things differ by design
elsewhere, and the comparison applies them: `auto` trains as the precision it resolves to
on this machine (kmodels.precision), and on the current lane every Estimator cell is
refused because tf.estimator is gone.

`python -m tests.matrix_test` also writes the table of answers to $KMODELS_MATRIX_TABLE
(a Markdown file) when that is set: kmodels/docs/scale.md shows it.
"""

import itertools
import os

from absl.testing import absltest
import numpy as np

from tests import testutil
import tensorflow as tf

# Two logical CPUs for mirrored-over-2, before TensorFlow initializes its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from kmodels import precision, trainers, training  # noqa: E402
from kmodels.errors import UserError  # noqa: E402

STRATEGIES = {  # column name -> distribution overrides
    "default": {"distribution__strategy": "default"},
    "one_device": {"distribution__strategy": "one_device", "distribution__devices": "cpu:0"},
    "mirrored (1 CPU)": {"distribution__strategy": "mirrored", "distribution__devices": "cpu:0"},
    "mirrored (2 CPUs)": {"distribution__strategy": "mirrored",
                          "distribution__devices": "cpu:0,cpu:1"},
    # No distribution.tpu: refused at once. (tpu=local without a TPU: tests/tpu_test.py,
    # in a process of its own, as connecting to a cluster changes the process's context.)
    "tpu (none here)": {"distribution__strategy": "tpu"},
}
# In this process only for cells refused before any strategy exists (see
# test_multi_worker_processes); cells that train run as two worker processes.
_REFUSED_HERE = {"multi_worker (2 processes)": {"distribution__strategy": "multi_worker"}}
TPU = "tpu (none here)"
MULTI_WORKER = "multi_worker (2 processes)"
TRAINERS = trainers.NAMES
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
_results = {}

_SCALE_DOC = os.path.join(testutil.REPO_ROOT, "kmodels", "docs", "scale.md")


def published_table(path=_SCALE_DOC):
  """{(strategy, trainer, precision): cell} from the matrix table in scale.md."""
  table = {}
  for line in testutil.read_text(path).splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 2 + len(PRECISIONS) and cells[1] in TRAINERS:
      for policy, cell in zip(PRECISIONS, cells[2:]):
        table[(cells[0], cells[1], policy)] = cell
  return table


def expected(table, strategy, trainer, policy):
  """The outcome the published table promises for a cell on this lane and machine."""
  if trainers.TABLE[trainer].estimator and not testutil.HAS_ESTIMATOR:
    return f"refused: trainer={trainer} needs tf.estimator, which TensorFlow removed in 2.16"
  promised = table[(strategy, trainer, policy)]
  if policy == precision.AUTO and promised.startswith("trains"):
    return f"trains ({precision.resolve(policy, trainers.TABLE[trainer])})"
  return promised


def _cell(test, strategy, trainer, policy):
  """Runs one in-process cell; returns 'trains (<precision>)' or 'refused: <its reason>'."""
  config = testutil.tiny_config(dataset__source="synthetic",
                                trainer=trainer,
                                precision=policy,
                                model__name="mlp",
                                train__batch_size=8,
                                **{
                                    **STRATEGIES,
                                    **_REFUSED_HERE
                                }[strategy])
  workdir = os.path.join(test.create_tempdir().full_path, "run")
  try:
    metrics = training.train_and_evaluate(config, workdir)
  except UserError as e:
    test.assertFalse(os.path.exists(workdir), f"{strategy}/{trainer}/{policy}: refused "
                     "after the workdir was made")
    return "refused: " + _reason(str(e))
  test.assertEqual(metrics["status"], "completed")
  for name in ("metrics.json", "history.json", "curves.png", "export"):
    test.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
  return f"trains ({metrics['precision']})"


class MatrixTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.table = published_table()

  def test_the_published_table_has_every_cell(self):
    strategies = [*STRATEGIES, MULTI_WORKER]
    self.assertEqual(set(self.table), set(itertools.product(strategies, TRAINERS, PRECISIONS)))

  def test_in_process_strategies(self):
    for strategy, trainer, policy in itertools.product(STRATEGIES, TRAINERS, PRECISIONS):
      with self.subTest(strategy=strategy, trainer=trainer, precision=policy):
        _results[(strategy, trainer, policy)] = _cell(self, strategy, trainer, policy)
        self.assertEqual(_results[(strategy, trainer, policy)],
                         expected(self.table, strategy, trainer, policy))

  def test_an_imagenet_architecture_trains_in_the_hardest_cells(self):
    # MobileNetV2 at its smallest size in the two cells furthest from a plain float32 run:
    # mixed bfloat16 under fit, and the custom loop's loss-scaled float16 replicated over two
    # CPUs. The mlp cells above cover every strategy; models_test trains each ImageNet
    # architecture a step; distribute_test and xla_test cover XLA under both trainers.
    cells = (("default", "fit", "mixed_bfloat16"), ("mirrored (2 CPUs)", "custom_loop",
                                                    "mixed_float16"))
    for strategy, trainer, policy in cells:
      with self.subTest(strategy=strategy, trainer=trainer, precision=policy):
        config = testutil.tiny_config(dataset__source="synthetic",
                                      dataset__name="cifar10",
                                      model__name="mobilenet_v2",
                                      trainer=trainer,
                                      precision=policy,
                                      **STRATEGIES[strategy])
        metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
        self.assertEqual(metrics["status"], "completed")
        self.assertTrue(all(np.isfinite(h["loss"]) for h in metrics["history"]))

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    _write_table()


class MultiWorkerRowTest(absltest.TestCase):
  """The table's multi_worker row. Apart from MatrixTest: it runs two processes at a time."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.table = published_table()

  def test_multi_worker_processes(self):
    # Two real worker processes for the cells that train; a refusal is decided from the
    # config before any strategy exists, so refused cells are checked in this process.
    for trainer, policy in itertools.product(TRAINERS, PRECISIONS):
      with self.subTest(trainer=trainer, precision=policy):
        promise = expected(self.table, MULTI_WORKER, trainer, policy)
        if promise.startswith("refused"):
          answer = _cell(self, MULTI_WORKER, trainer, policy)
        else:
          answer = self._job(trainer, policy)
        _results[(MULTI_WORKER, trainer, policy)] = answer
        self.assertEqual(answer, promise)

  def _job(self, trainer, policy):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    args = [
        "--config=configs/base.py", f"--workdir={workdir}", "--config.dataset.source=synthetic",
        "--config.dataset.name=mnist", "--config.dataset.synthetic_train_examples=64",
        "--config.model.name=mlp", "--config.train.batch_size=8",
        "--config.train.steps_per_epoch=2", f"--config.trainer={trainer}",
        f"--config.precision={policy}"
    ]
    processes, logs, _ = testutil.start_workers(args)
    codes = [p.wait(300) for p in processes]
    text = testutil.read_text(logs[0])
    if codes == [2, 2]:
      self.assertFalse(os.path.exists(workdir))
      return "refused: " + _reason(text.split("kmodels: error: ")[1])
    self.assertEqual(codes, [0, 0], text[-3000:])
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), None)
    self.assertEqual(metrics["status"], "completed")
    for name in ("metrics.json", "history.json", "curves.png", "export"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    return f"trains ({metrics['precision']})"

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    _write_table()


def _write_table():
  """The answers so far, as Markdown, to $KMODELS_MATRIX_TABLE when that is set."""
  path = os.environ.get("KMODELS_MATRIX_TABLE")
  if path and _results:
    with open(path, "w") as f:
      f.write(markdown_table(_results) + "\n")


def _reason(message):
  """The gist of a refusal for the table: up to the first ':', ';', '(' or sentence end."""
  for separator in (":", ";", " (", ". ", "\n"):
    message = message.split(separator)[0]
  return message.strip()[:110]


def markdown_table(results):
  """Rows: strategy x trainer; columns: precisions."""
  strategies = list(dict.fromkeys(s for s, _, _ in results))
  lines = [
      "| strategy | trainer | " + " | ".join(PRECISIONS) + " |",
      "|---|---|" + "---|" * len(PRECISIONS)
  ]
  for strategy, trainer in itertools.product(strategies, TRAINERS):
    if (strategy, trainer, PRECISIONS[0]) in results:
      cells = [results[(strategy, trainer, p)].replace("|", "/") for p in PRECISIONS]
      lines.append(f"| {strategy} | {trainer} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  absltest.main()
