"""Packaging: every import is declared, and `pip install .` runs outside the repository."""

import ast
import glob
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib

from absl.testing import absltest

from tests import testutil

_OWN = {"kmodels", "launch", "configs"}

# Imported by launch.export alone; its extra is the current lane's (the full lane's TF 2.15
# pins older numpy and protobuf than they need).
_EXPORT_EXTRA = {
    "ai_edge_litert", "onnx", "onnxruntime", "tensorflow_model_optimization", "tf2onnx"
}


def _declared():
  """Normalized distribution names in pyproject.toml's dependencies and extras."""
  with open(os.path.join(testutil.REPO_ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  requirements = project["dependencies"] + [
      r for extra in project["optional-dependencies"].values() for r in extra
  ]
  return {_normalized(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def _normalized(name):
  return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules():
  """module -> a file importing it, over the package's own code (kmodels/, launch/)."""
  found = {}
  for path in glob.glob(os.path.join(testutil.REPO_ROOT, "kmodels", "**", "*.py"),
                        recursive=True) + glob.glob(
                            os.path.join(testutil.REPO_ROOT, "launch", "*.py")):
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
               if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
      for name in names:
        found.setdefault(name.split(".")[0], os.path.relpath(path, testutil.REPO_ROOT))
  return found


class PackagingTest(absltest.TestCase):

  def test_every_third_party_import_is_a_declared_distribution(self):
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    for module, where in sorted(_imported_top_level_modules().items()):
      if module in _OWN or module in sys.stdlib_module_names:
        continue
      if module in _EXPORT_EXTRA and testutil.HAS_ESTIMATOR:
        continue  # the export extra installs on the current lane only (pyproject.toml)
      owners = {_normalized(d) for d in distributions.get(module, [])}
      with self.subTest(module=module):
        self.assertTrue(owners, f"{module} (imported in {where}) is not installed")
        # tensorflow provides several top-level names (tensorflow, tf-keras's keras, ...)
        self.assertTrue(
            owners & declared, f"{module} (imported in {where}) comes from "
            f"{sorted(owners)}, none of which pyproject.toml declares")

  def test_pip_install_into_a_fresh_venv_runs_a_shipped_config_outside_the_repo(self):
    scratch = self.create_tempdir().full_path
    venv = os.path.join(scratch, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    # The lane's dependencies come from its own venv (no 600 MB TensorFlow download); kmodels
    # itself is built and installed from the repository like any package.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"],
        check=True,
        capture_output=True,
        text=True).stdout.strip()
    with open(os.path.join(site, "lane_dependencies.pth"), "w") as f:
      f.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([
        python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        testutil.REPO_ROOT
    ],
                             capture_output=True,
                             text=True,
                             cwd=scratch)
    self.assertEqual(install.returncode, 0, install.stderr[-3000:])
    where = subprocess.run([
        python, "-c", "import configs, kmodels; print(configs.__file__); "
        "print(kmodels.__file__)"
    ],
                           capture_output=True,
                           text=True,
                           cwd=scratch,
                           env=dict(os.environ, PYTHONPATH=""))
    config_file, kmodels_file = where.stdout.split()
    self.assertTrue(kmodels_file.startswith(site), kmodels_file)  # the installed copy
    workdir = os.path.join(scratch, "run")
    run = subprocess.run([
        python, "-m", "launch.train",
        f"--config={os.path.join(os.path.dirname(config_file), 'base.py')}", f"--workdir={workdir}",
        "--config.dataset.source=synthetic", "--config.dataset.synthetic_train_examples=32",
        "--config.train.batch_size=8", "--config.train.steps_per_epoch=2"
    ],
                         capture_output=True,
                         text=True,
                         cwd=scratch,
                         env=dict(os.environ, PYTHONPATH=""),
                         timeout=600)
    self.assertEqual(run.returncode, 0, run.stderr[-3000:])
    self.assertTrue(os.path.exists(os.path.join(workdir, "export", "1", "saved_model.pb")))

  def test_the_lanes_protobuf_has_a_compiled_backend(self):
    # A protobuf without a wheel for this Python installs its pure-Python backend, and every
    # trace, checkpoint and SavedModel gets ~30% slower (BUILD_NOTES, the full lane's pins).
    from google.protobuf.internal import api_implementation
    self.assertNotEqual(api_implementation.Type(), "python")

  def test_the_gpu_lane_file_resolves_with_the_lane_pins(self):
    lane = "full" if testutil.HAS_ESTIMATOR else "current"
    lanes = os.path.join(testutil.REPO_ROOT, "launch", "lanes")
    report = os.path.join(self.create_tempdir().full_path, "report.json")
    # --dry-run: pip's resolver reads each wheel's metadata, nothing is installed.
    proc = subprocess.run([
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--report", report, "-r",
        os.path.join(lanes, f"{lane}.txt"), "-r",
        os.path.join(lanes, f"gpu-{lane}.txt")
    ],
                          capture_output=True,
                          text=True,
                          timeout=900)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(report) as f:
      resolved = {
          _normalized(item["metadata"]["name"]): item["metadata"]["version"]
          for item in json.load(f)["install"]
      }
    tensorflow = {"full": "2.15.1", "current": "2.21.0"}[lane]
    self.assertEqual(resolved["tensorflow"], tensorflow)
    # The CUDA runtime and cuDNN come as pip wheels: no system CUDA needed.
    self.assertTrue({"nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12"} <= set(resolved),
                    sorted(resolved))


if __name__ == "__main__":
  absltest.main()
