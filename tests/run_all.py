"""Runs every tests/*_test.py module, each in its own process, two at a time.

  python -m tests.run_all                  # the whole suite
  python -m tests.run_all fast             # the fast tier: in-process, mock or tiny data
  python -m tests.run_all slow             # the slow tier: real processes, signals, servers
  python -m tests.run_all data_test models_test

Why processes: TensorFlow's device setup (logical CPUs for MirroredStrategy) and Keras'
global precision policy are per process, so modules must not share one. Why two at a
time: the machines this runs on have two cores, and much of a test's time is Python
tracing that leaves a core idle.
"""

import concurrent.futures
import glob
import os
import subprocess
import sys
import time

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
# Modules that start launcher processes, send signals, run multi-worker jobs or servers, or
# sweep the strategy x trainer x precision matrix. Every other module is the fast tier.
SLOW = {"benchmark_test", "cluster_test", "container_test", "cpus_test", "data_service_test",
        "estimator_test", "faults_test", "gcs_test", "kill_resume_test", "launch_test",
        "locks_test", "matrix_test", "migration_test", "multi_worker_test", "packaging_test",
        "serving_test", "step_checkpoint_test", "tpu_test"}
# The longest modules (seconds on 2 cores, both lanes: gcs ~570, matrix ~450, multi_worker
# ~330, ...) start first, so the two workers finish together instead of one of them
# starting a ten-minute module when the other is done.
LONGEST_FIRST = ("container_test", "gcs_test", "matrix_test", "multi_worker_test",
                 "cluster_test", "launch_test",
                 "kill_resume_test", "serving_test", "estimator_test", "step_checkpoint_test",
                 "image_folder_test", "data_test")


def _modules(selected):
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(TESTS_DIR, "*_test.py")))
  tiers = {"fast": {n for n in names if n not in SLOW}, "slow": SLOW & set(names)}
  selected = set().union(*(tiers.get(s, {s}) for s in selected))
  unknown = set(selected) - set(names)
  if unknown:
    sys.exit(f"No such test module(s): {', '.join(sorted(unknown))}. Have: {', '.join(names)}")
  chosen = [n for n in names if not selected or n in selected]
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  return sorted(chosen, key=lambda n: rank.get(n, len(rank)))


def _run(module):
  start = time.monotonic()
  proc = subprocess.run([sys.executable, "-m", f"tests.{module}"], cwd=REPO_ROOT,
                        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  return module, proc.returncode, proc.stdout, time.monotonic() - start


def main(selected):
  modules = _modules(selected)
  workers = int(os.environ.get("KMODELS_TEST_JOBS", "2"))
  print(f"Running {len(modules)} test modules, {workers} at a time: {', '.join(modules)}",
        flush=True)
  failed, start = [], time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    runs = [pool.submit(_run, module) for module in modules]
    for finished in concurrent.futures.as_completed(runs):
      module, code, output, seconds = finished.result()
      status = "ok" if code == 0 else f"FAILED (exit {code})"
      summary = [l for l in output.splitlines() if l.startswith(("Ran ", "OK", "FAILED"))]
      print(f"[{status}] {module} in {seconds:.0f}s: {' '.join(summary)}", flush=True)
      if code:
        failed.append(module)
        print(output[-20000:], flush=True)
  print(f"\n{len(modules) - len(failed)}/{len(modules)} modules passed in "
        f"{time.monotonic() - start:.0f}s." + (f" Failed: {', '.join(failed)}" if failed else ""))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
