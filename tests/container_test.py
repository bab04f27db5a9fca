"""The container image, for real: podman builds the Dockerfile and kmodels runs inside.

The base image is built offline from Debian's packages (launch/container_base.sh); the
image then installs the full lane's pins (from this machine's package mirror when it has
one) and kmodels. Containers run as the Dockerfile's non-root user with a host directory
as the workdir. Skipped, saying why, only where containers cannot run at all.
"""

import os
import subprocess
import time
import uuid

from absl.testing import absltest

from tests import testutil

IMAGE = "localhost/kmodels-test:latest"
_CONF = os.path.join(testutil.REPO_ROOT, "launch", "containers.conf")
_ENV = dict(os.environ, CONTAINERS_CONF=_CONF)
_CA = "/etc/ssl/certs/ca-certificates.crt"
_MIRRORS = [d for d in ("/opt/pypi", "/opt/pypi-more") if os.path.isdir(d)]
_TINY = ("--config=configs/base.py", "--config.dataset.source=synthetic", "--config.model.name=mlp",
         "--config.train.batch_size=16")


def _podman(*args, timeout=1800, check=False):
  return subprocess.run(["podman", *args],
                        env=_ENV,
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        check=check)


def _why_containers_cannot_run():
  if os.environ.get("LANE", "full") != "full":
    return "the container tests run in the full lane only (the image is built on its pins)"
  if os.geteuid() != 0:
    return "building the base image needs root (apt-get, debootstrap)"
  base = subprocess.run(["bash", "launch/container_base.sh"],
                        cwd=testutil.REPO_ROOT,
                        env=_ENV,
                        capture_output=True,
                        text=True,
                        timeout=1800)
  if base.returncode:
    return "launch/container_base.sh failed: " + base.stderr.strip()[-500:]
  probe = _podman("run",
                  "--rm",
                  "--network=none",
                  "docker.io/library/python:3.11-slim-bookworm",
                  "python3.11",
                  "-c",
                  "print('ok')",
                  timeout=300)
  if probe.stdout.strip() != "ok":
    return "podman cannot run a container here: " + probe.stderr.strip()[-500:]
  return None


def setUpModule():
  reason = _why_containers_cannot_run()
  if reason and os.environ.get("CI") == "true" and "lane" not in reason:
    # .ci/run installs podman and builds the base: in CI, not running is a failure.
    raise AssertionError(f"CI=true and the container tests cannot run: {reason}")
  if reason:
    raise absltest.SkipTest(reason)
  args = ["build", "--network=host", "--tag", IMAGE]
  if os.path.exists(_CA):
    args += ["--volume", f"{_CA}:{_CA}:ro", "--build-arg", f"PIP_CERT={_CA}"]
  if _MIRRORS:
    args += [a for d in _MIRRORS for a in ("--volume", f"{d}:{d}:ro")]
    args += [
        "--build-arg", "PIP_EXTRA_INDEX_URL=" + " ".join(f"file://{d}/simple" for d in _MIRRORS)
    ]
  build = _podman(*args, testutil.REPO_ROOT)
  if build.returncode:
    raise AssertionError("podman build failed:\n" + (build.stdout + build.stderr)[-5000:])


class ContainerTest(absltest.TestCase):

  def _volume(self):
    """A host directory the container's non-root user can write."""
    path = self.create_tempdir().full_path
    os.chmod(path, 0o777)
    return path

  def _run_args(self, volume, name=None):
    return [
        "run", "--rm", "--network=none", "--volume", f"{volume}:/work",
        *(["--name", name] if name else []), IMAGE
    ]

  def test_trains_as_a_non_root_user_with_a_volume_as_workdir(self):
    volume = self._volume()
    proc = _podman(*self._run_args(volume),
                   *_TINY,
                   "--workdir=/work/run",
                   "--config.train.steps_per_epoch=2",
                   timeout=900)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    run = os.path.join(volume, "run")
    self.assertTrue(os.path.exists(os.path.join(run, "export", "1", "saved_model.pb")))
    self.assertEqual(
        testutil.read_json(os.path.join(run, "metrics.json"), {})["status"], "completed")
    self.assertEqual(os.stat(os.path.join(run, "metrics.json")).st_uid, 1000)  # not root
    whoami = _podman("run", "--rm", "--network=none", "--entrypoint", "id", IMAGE, "-u")
    self.assertEqual(whoami.stdout.strip(), "1000")

  def test_sigterm_gives_143_and_the_same_command_resumes_and_completes(self):
    volume, name = self._volume(), f"kmodels-test-{uuid.uuid4().hex[:8]}"
    command = [
        *self._run_args(volume, name), *_TINY, "--workdir=/work/run",
        "--config.train.steps_per_epoch=400", "--config.train.epochs=3"
    ]
    process = subprocess.Popen(["podman", *command],
                               env=_ENV,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               text=True)
    history = os.path.join(volume, "run", "history.json")
    deadline = time.monotonic() + 600
    while not testutil.read_json(history, []) and process.poll() is None:
      self.assertLess(time.monotonic(), deadline, "no epoch finished in 10 minutes")
      time.sleep(0.5)
    _podman("kill", "--signal", "TERM", name, timeout=60)
    output = process.communicate(timeout=300)[0]
    self.assertEqual(process.returncode, 143, output[-3000:])
    done = len(testutil.read_json(history, []))
    self.assertLess(done, 3, "the run ended before the signal; nothing was tested")
    again = _podman(*command, timeout=900)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    metrics = testutil.read_json(os.path.join(volume, "run", "metrics.json"), {})
    self.assertEqual(metrics["epochs_completed"], 3)
    self.assertIn("Resum", again.stderr)

  def test_a_user_error_is_exit_2_with_one_line(self):
    proc = _podman(*self._run_args(self._volume()),
                   "--config=configs/base.py",
                   "--workdir=/work/run",
                   "--config.train.epochs=0",
                   timeout=600)
    self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
    self.assertIn("kmodels: error: train.epochs must be a positive integer", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)


if __name__ == "__main__":
  absltest.main()
