"""Config validation: every rule rejects what it should, with a message that names the key."""

import ast
import collections
import os
import re
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil

from kmodels import runtime, trainers, training, validation
from kmodels.errors import UserError
import configs.cifar_googlenet

CONFIG_DIR = os.path.join(testutil.REPO_ROOT, "configs")
CONFIG_FILES = sorted(f for f in os.listdir(CONFIG_DIR)
                      if f.endswith(".py") and f not in ("__init__.py", "tutorials.py"))

# A value that turns each setting on, for every key some trainer row cannot apply.
_ON = {
    "train.label_smoothing": 0.1,
    "train.sync_batchnorm": True,
    "train.accumulate_steps": 2,
    "train.checkpoint_every_steps": 5,
    "train.profile_steps": (1, 2),
    "train.optimizer.scale_by_batch": True,
    "train.optimizer.weight_decay": 0.1,
    "train.optimizer.clip_global_norm": 1.0,
    "train.optimizer.ema_momentum": 0.99,
    "dataset.augment.mixup_alpha": 0.2,
    "dataset.augment.cutmix_alpha": 1.0
}


class TrainerTableTest(parameterized.TestCase):
  """Every setting a trainer row cannot apply is refused from the row's own columns."""

  @parameterized.parameters(*trainers.NAMES)
  def test_each_unsupported_setting_is_refused_and_the_others_train(self, name):
    row = trainers.TABLE[name]
    if row.estimator and not testutil.HAS_ESTIMATOR:
      self.skipTest("tf.estimator exists on the full lane only")
    every = {key for t in trainers.TABLE.values() for key, _ in t.unsupported}
    self.assertContainsSubset(every, set(_ON))  # a new key needs an "on" value here
    unsupported = {key for key, _ in row.unsupported}
    for key, value in _ON.items():
      config = testutil.tiny_config(trainer=name)
      testutil.set_key(config, key, value)
      if key in unsupported:
        with self.assertRaisesRegex(UserError, f"trainer={name} .* cannot apply "
                                    f"{re.escape(key)}="):
          validation.validate(config)
      else:
        validation.validate(config)  # accepted: the trainer applies it


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(CONFIG_FILES)
  def test_every_shipped_config_loads_and_is_valid(self, filename):
    path = os.path.join(CONFIG_DIR, filename)
    config = testutil.shipped_config_module(filename).get_config()
    validation.validate(config)
    with open(path) as f:
      self.assertRegex(f.read(), r"python -m launch\.(train|compare) --config=configs/" + filename)

  @parameterized.parameters(
      f for f in CONFIG_FILES if f.startswith("mnist_") or f.startswith("cifar_cnn"))
  def test_seed_configs_have_a_valid_fashion_mnist_twin(self, filename):
    module = testutil.shipped_config_module(filename)
    config = module.get_config("fashion_mnist")
    self.assertEqual(config.dataset.name, "fashion_mnist")
    validation.validate(config)
    with self.assertRaisesRegex(ValueError, "fashion_mnist"):
      module.get_config("imagenet")

  @parameterized.parameters(
      ("model__name", "vgg99", "model.name 'vgg99'.*minivggnet \\(subclassed\\)"),
      ("dataset__source", "kaggle", "dataset.source='kaggle'.*tfds, synthetic"),
      ("trainer", "keras", "trainer='keras'.*fit"),
      ("distribution__strategy", "mesh", "distribution.strategy='mesh'.*mirrored"),
      ("precision", "float16", "precision='float16'.*mixed_bfloat16"),
      ("distribution__collective", "mpi", "distribution.collective='mpi'.*ring"),
      ("distribution__connect_timeout_seconds", 0, "connect_timeout_seconds must be a pos"),
      ("train__optimizer__name", "lamb", "train.optimizer.name='lamb'.*adam"),
      ("train__batch_size", 0, "train.batch_size must be a positive integer"),
      ("train__batch_size", -8, "train.batch_size must be a positive integer"),
      ("train__epochs", 0, "train.epochs must be a positive integer"),
      ("train__steps_per_epoch", 0, "train.steps_per_epoch must be a positive integer or None"),
      ("train__optimizer__learning_rate", 0.0, "learning_rate must be > 0"),
      ("train__optimizer__momentum", 1.5, "momentum must be in \\[0.0, 1.0\\)"),
      ("dataset__augment__zoom", -0.1, "augment.zoom must be in"),
      ("train__optimizer__schedule", "step", "schedule='step'.*constant, cosine"),
      ("train__optimizer__warmup_fraction", 1.0, "warmup_fraction must be in"),
      ("dataset__image_size", 0, "dataset.image_size must be a positive integer or None"),
      ("dataset__image_size", 100_000, "dataset.image_size=100000 is more than 8192"),
      ("dataset__channels", 4, "dataset.channels"),
      ("dataset__cache", "disk", "dataset.cache='disk'.*auto, memory, none"),
      ("dataset__crop__area", (0.9, 0.1), "dataset.crop.area must be \\(min, max\\)"),
      ("dataset__max_image_pixels", 0, "dataset.max_image_pixels must be a positive"),
      ("train__checkpoint_every_steps", -1, "checkpoint_every_steps must be a positive"),
      ("train__log_every_seconds", 0, "log_every_seconds must be in"),
      ("dataset__crop__policy", "random", "dataset.crop.policy='random'.*auto, imagenet, "
       "square"),
      ("train__profile_steps", (4, 2), "profile_steps must be \\(first, last\\)"),
      ("train__profile_steps", (0, 2), "profile_steps must be"),
      ("train__profile_steps", (1, 2, 3), "profile_steps must be"),
      ("distribution__gpu_memory_growth", "yes", "gpu_memory_growth='yes'.*auto, on, off"),
      ("train__optimizer__ema_momentum", 1.0, "ema_momentum must be in"),
      ("train__optimizer__finetune_lr_factor", 0.0, "finetune_lr_factor must be in"),
  )
  def test_bad_value_is_rejected_with_the_key_named(self, key, value, message):
    with self.assertRaisesRegex(UserError, message):
      validation.validate(testutil.tiny_config(**{key: value}))

  def test_cosine_and_time_decay_together_are_refused(self):
    config = testutil.tiny_config(train__optimizer__schedule="cosine",
                                  train__optimizer__time_decay=0.01)
    with self.assertRaisesRegex(UserError, "time_decay and schedule='cosine' both decay"):
      validation.validate(config)

  def test_cosine_schedule_warms_up_then_decays_to_zero(self):
    from kmodels import optimizers  # pylint: disable=g-import-not-at-top
    config = testutil.tiny_config(train__optimizer__schedule="cosine",
                                  train__optimizer__learning_rate=0.1,
                                  train__optimizer__warmup_fraction=0.1)
    schedule = optimizers.learning_rate(config.train.optimizer, steps=100)
    self.assertAlmostEqual(float(schedule(0)), 0.01, places=6)
    self.assertAlmostEqual(float(schedule(10)), 0.1, places=6)
    self.assertLess(float(schedule(55)), 0.1)
    self.assertAlmostEqual(float(schedule(100)), 0.0, places=6)
    with self.assertRaisesRegex(UserError, "set train.steps_per_epoch"):
      optimizers.learning_rate(config.train.optimizer, steps=None)

  def test_every_trainer_in_the_table_trains_and_the_readme_shows_the_table(self):
    with open(os.path.join(testutil.REPO_ROOT, "README.md")) as f:
      self.assertIn(trainers.markdown_table(), f.read())
    for trainer in trainers.TABLE.values():
      with self.subTest(trainer=trainer.name):
        config = testutil.tiny_config(dataset__source="synthetic",
                                      model__name="mlp",
                                      trainer=trainer.name)
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        if trainer.estimator and not testutil.HAS_ESTIMATOR:  # the current lane refuses it
          with self.assertRaisesRegex(UserError, "removed in 2.16"):
            training.train_and_evaluate(config, workdir)
          continue
        metrics = training.train_and_evaluate(config, workdir)
        self.assertEqual((metrics["status"], metrics["trainer"]), ("completed", trainer.name))
        self.assertEqual(len(metrics["history"]), 1)

  def test_only_the_trainer_table_compares_trainer_names(self):
    # What differs between trainers is a column of kmodels.trainers.TABLE; code elsewhere
    # reads the column, so a new trainer is one row (and its module), not a hunt.
    name = "|".join(trainers.NAMES)
    comparison = re.compile(rf"""trainer\)?\s*(==|!=)\s*["']({name})["']|"""
                            rf"""["']({name})["']\s*(==|!=)\s*\w*trainer""")
    found, trainers_package = [], os.path.dirname(trainers.__file__)
    for folder in ("kmodels", "launch"):
      for directory, _, files in os.walk(os.path.join(testutil.REPO_ROOT, folder)):
        for file_name in files:
          path = os.path.join(directory, file_name)
          if not file_name.endswith(".py") or directory.startswith(trainers_package):
            continue
          with open(path) as f:
            found += [f"{path}:{n}" for n, line in enumerate(f, 1) if comparison.search(line)]
    self.assertEqual([], found)

  def test_imports_form_no_circle_between_modules_or_rooms(self):
    graph = _kmodels_imports()
    self.assertEqual([], _circles(graph))
    rooms = collections.defaultdict(set)  # kmodels.data.sources -> kmodels.data
    for module, imported in graph.items():
      rooms[_room(module)] |= {_room(m) for m in imported} - {_room(module)}
    self.assertEqual([], _circles(rooms))
    self.assertIn("kmodels.trainers", rooms["kmodels.training"])  # the reading sees imports
    self.assertNotIn("kmodels.trainers", rooms["kmodels.serving"])

  def test_importing_kmodels_changes_nothing_and_configure_must_come_first(self):
    env = {
        k: v for k, v in os.environ.items() if k not in runtime.ENVIRONMENT and k != "PYTHONPATH"
    }
    quiet = subprocess.run([
        sys.executable, "-c", "import os, sys, kmodels, kmodels.errors; "
        "print('tensorflow' in sys.modules, 'TF_USE_LEGACY_KERAS' in os.environ)"
    ],
                           cwd=testutil.REPO_ROOT,
                           env=env,
                           capture_output=True,
                           text=True,
                           timeout=300)
    self.assertEqual(quiet.stdout.split(), ["False", "False"], quiet.stderr[-2000:])
    late = subprocess.run([
        sys.executable, "-c", "import tensorflow; from kmodels import runtime; "
        "runtime.configure()"
    ],
                          cwd=testutil.REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
    self.assertIn("must run before TensorFlow is imported", late.stderr)

  def test_time_decay_follows_overridden_epochs(self):
    config = configs.cifar_googlenet.get_config()
    self.assertAlmostEqual(config.train.optimizer.time_decay, 1e-2 / 60)
    config.train.epochs = 10
    self.assertAlmostEqual(config.train.optimizer.time_decay, 1e-2 / 10)


def _kmodels_imports():
  """{module: kmodels modules it imports anywhere in its file}, read from the source."""
  root = os.path.join(testutil.REPO_ROOT, "kmodels")
  files = {}
  for directory, _, names in os.walk(root):
    for name in names:
      if name.endswith(".py"):
        relative = os.path.relpath(os.path.join(directory, name[:-3]), testutil.REPO_ROOT)
        module = relative.replace(os.sep, ".").removesuffix(".__init__")
        files[module] = os.path.join(directory, name)
  graph = {}
  for module, path in files.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported |= {a.name for a in node.names if a.name in files}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in files:
        submodules = {f"{node.module}.{a.name}" for a in node.names} & set(files)
        imported |= submodules or {node.module}
        if len(submodules) < len(node.names):
          imported.add(node.module)
    graph[module] = imported - {module}
  return graph


def _room(module):
  """A subpackage (kmodels.data) or a top-level module (kmodels.training)."""
  return ".".join(module.split(".")[:2])


def _circles(graph):
  """The import circles of `graph`, each as a sorted list (depth-first search)."""
  done, path, circles = set(), [], []

  def visit(node):
    if node in path:
      circles.append(sorted(path[path.index(node):]))
      return
    if node in done:
      return
    path.append(node)
    for neighbour in sorted(graph.get(node, ())):
      visit(neighbour)
    path.pop()
    done.add(node)

  for node in sorted(graph):
    visit(node)
  return circles


if __name__ == "__main__":
  absltest.main()
