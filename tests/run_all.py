"""Runs the tests/*_test.py modules, each in its own process, and times them.

  python -m tests.run_all                  # every module this lane runs
  python -m tests.run_all fast             # the fast tier: in-process, mock or tiny data
  python -m tests.run_all slow             # the slow tier: real processes, signals, servers
  python -m tests.run_all data_test models_test
  LANE=current python -m tests.run_all     # the current lane's share (CURRENT_LANE below)

Why processes: TensorFlow's device setup (logical CPUs for MirroredStrategy) and Keras'
global precision policy are per process, so modules must not share one. Two run at a
time (the machines have two cores and much of a test's time is Python tracing that leaves
a core idle), but never two multi-process units side by side (MULTI_PROCESS): each of
those runs several TensorFlow processes at once, and two of them side by side overload two
cores (a multi-worker job's heartbeats time out, and every module takes twice as long).
A module whose multi-process part is a few test classes (MULTI_PROCESS_CLASSES) runs as two
units, so the rest of it need not wait for the other multi-process units.

At the end: the five slowest modules, every skipped test with its reason, and
`.test_times.json` at the repo root (git-ignored) with each module's wall time, tier, test
and skip counts and the total. A module past its timeout is killed and fails by name.
"""

import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree

from tests import skip_reasons

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
TIMES_FILE = os.path.join(REPO_ROOT, ".test_times.json")

# The slow tier: modules that start launcher processes, send signals, run servers or sweep
# every config and every strategy x trainer x precision. Every other module is the fast
# tier (`bash launch/test.sh fast`, before each commit): in-process, mock or tiny data.
SLOW = {
    "benchmark_test", "cluster_test", "configs_test", "container_test", "cpus_test",
    "data_service_test", "estimator_test", "export_test", "faults_test", "gcs_test",
    "kill_resume_test", "launch_test", "locks_test", "matrix_test", "migration_test",
    "multi_worker_test", "packaging_test", "progress_test", "serving_test", "step_checkpoint_test",
    "tpu_test"
}
# Modules that run several TensorFlow processes at once (worker pairs, a server with its
# clients, a container, a run beside its unbroken twin): never two of them side by side.
MULTI_PROCESS = {
    "cluster_test", "container_test", "data_service_test", "multi_worker_test",
    "step_checkpoint_test"
}
# Modules that run one TensorFlow process at a time except in these classes: the classes
# are a multi-process unit of their own ("module:Class"), the rest of the module another.
MULTI_PROCESS_CLASSES = {"gcs_test": ("SharedBucketTest",), "matrix_test": ("MultiWorkerRowTest",)}

# What the current lane (TF 2.21 + tf-keras) runs: what can differ between TensorFlow
# versions, not everything twice. A module name alone runs the whole module; a tuple names
# its tests (absltest's Class or Class.method). The full lane runs every module whole.
# BUILD_NOTES "The test suite and CI" gives the reason for each line.
CURRENT_LANE = {
    "validation_test":
        None,  # imports, rooms, no TF at import, the Keras 2 switch
    "models_test": ("ModelsTest", "BackboneWeightsTest"),  # the Keras API surface
    "custom_loop_test":
        None,  # GradientTape, optimizer and loss-scale APIs
    "recipe_test": ("AccumulationTest",),  # accumulation rides Keras' optimizer internals
    "precision_test":
        None,  # mixed precision policies
    "distribute_test":
        None,  # strategies, MirroredStrategy over 2 logical CPUs
    "data_test":
        None,  # tfds builders and their checksums
    "serving_test": ("ExportTest", "CrossLaneTest"),  # export; the full lane's export here
    "migration_test": ("CurrentLaneTest",),  # the full lane's migrated model served here
    "gcs_test": ("TrainToBucketTest", "EmulatorRouteTest", "UnusableStorageTest"),  # gs://
    "kill_resume_test": ("KillResumeTest.test_sigkill_then_the_same_command_finishes_every_"
                         "epoch_one_device", "KillResumeTest.test_sigkill_then_the_same_"
                         "command_finishes_every_epoch_default_fit"),  # per Keras trainer
    "multi_worker_test":
        tuple(  # collectives and multi-worker sync, per Keras trainer
            f"MultiWorkerTest.test_two_workers_train_in_sync_and_only_the_chief_writes{i}"
            for i in (0, 1)),
    "packaging_test":
        None,  # the lane's pins install and resolve
    "export_test":
        None,  # LiteRT/ONNX: the export extra is this lane's only
    "estimator_test": ("EstimatorTest.test_current_lane_says_where_estimator_went",),
}

# Skips CI may see: a test of the other lane. Under CI=true any other skip (a server, a
# package or a data file the scripts should have installed is missing) fails the module.
# A machine where root may not make a cgroup (neither v2 with the cpu controller delegated
# nor a v1 cpu hierarchy) cannot run the quota test: nothing a script could install.
EXPECTED_SKIPS = ("lane", "tf.estimator", "tfds rejects", "a cgroup this root may make")

# Seconds a module took in the full lane (2-core AMD EPYC, 2026-12-06): the order of a first
# run on a fresh clone, which has no .test_times.json yet.
FIRST_GUESS = {
    "gcs_test": 600,
    "matrix_test": 380,
    "faults_test": 230,
    "container_test": 240,
    "configs_test": 225,
    "models_test": 150,
    "zoo_test": 130,
    "cluster_test": 140,
    "serving_test": 130,
    "estimator_test": 130,
    "recipe_test": 100,
    "migration_test": 160,
    "benchmark_test": 80
}

DEFAULT_TIMEOUT = 900  # seconds; a module that needs more says so below
TIMEOUTS = {"container_test": 1500, "gcs_test": 1200, "matrix_test": 1200}


def _all_modules():
  return sorted(name[:-3] for name in os.listdir(TESTS_DIR) if name.endswith("_test.py"))


def tier(module):
  return "slow" if module in SLOW else "fast"


def _test_classes(module):
  """The TestCase classes a module defines (`class NameTest(`), read without importing it."""
  with open(os.path.join(TESTS_DIR, f"{module}.py")) as f:
    tree = ast.parse(f.read())
  return [
      node.name
      for node in tree.body
      if isinstance(node, ast.ClassDef) and node.name.endswith("Test")
  ]


def units(module, selected_tests):
  """[(unit name, test names or None, multi-process?)] that a module's selection runs as."""
  split = MULTI_PROCESS_CLASSES.get(module, ())
  if not split:
    return [(module, selected_tests, module in MULTI_PROCESS)]
  wanted = selected_tests or _test_classes(module)
  multi = [t for t in wanted if t.split(".")[0] in split]
  single = [t for t in wanted if t.split(".")[0] not in split]
  return ([(module, single, False)] if single else []) + ([(f"{module}:{','.join(split)}", multi,
                                                            True)] if multi else [])


def select(args, lane):
  """[(module, test names or None)] for the arguments and lane."""
  names = _all_modules()
  wanted = set()
  for arg in args or ["all"]:
    if arg == "all":
      wanted |= set(names)
    elif arg in ("fast", "slow"):
      wanted |= {n for n in names if tier(n) == arg}
    elif arg in names:
      wanted.add(arg)
    else:
      sys.exit(f"No such test module or tier: {arg}. Have: fast, slow, {', '.join(names)}")
  explicit = bool(args) and all(a not in ("all", "fast", "slow") for a in args)
  chosen = []
  for name in sorted(wanted):
    if lane == "current" and not explicit:
      if name not in CURRENT_LANE:
        continue
      chosen.append((name, CURRENT_LANE[name]))
    else:
      chosen.append((name, None))
  return chosen


class _Slots:
  """Two workers, at most one of them in a multi-process unit."""

  def __init__(self, workers):
    self._condition = threading.Condition()
    self._free, self._multi_running = workers, False

  def take(self, pending):
    """Blocks until a module of `pending` may start; removes and returns it (or None)."""
    with self._condition:
      while True:
        if not pending:
          return None
        if self._free:
          for i, (_, _, multi) in enumerate(pending):
            if not multi or not self._multi_running:
              self._free -= 1
              self._multi_running |= multi
              return pending.pop(i)
        self._condition.wait()

  def give_back(self, multi):
    with self._condition:
      self._free += 1
      if multi:
        self._multi_running = False
      self._condition.notify_all()


def _counts(xml_path, skip_reasons):
  """(tests, failures+errors, [(test, skip reason)]) from absltest's JUnit XML.

  The XML has no skip reasons: they come from tests/skip_reasons.py's file.
  """
  try:
    root = ElementTree.parse(xml_path).getroot()
  except (OSError, ElementTree.ParseError):
    return 0, 0, []
  tests, bad, skips = 0, 0, []
  for case in root.iter("testcase"):
    tests += 1
    bad += len(case.findall("failure")) + len(case.findall("error"))
    if case.get("result") == "suppressed" or case.findall("skipped"):
      test = f"{case.get('classname')}.{case.get('name')}"
      skips.append((test, skip_reasons.get(test, "(no reason recorded)")))
  return tests, bad, skips


def run_unit(unit, selected_tests, multi):
  """Runs one unit (a module or part of one) in its own process group; returns its record."""
  module = unit.split(":")[0]
  timeout = TIMEOUTS.get(unit, DEFAULT_TIMEOUT)
  scratch = tempfile.mkdtemp(prefix="kmodels-tests-")
  xml_path = os.path.join(scratch, f"{module}.xml")
  skips_path = os.path.join(scratch, f"{module}.skips.jsonl")
  command = [sys.executable, "-m", "tests.skip_reasons", f"tests.{module}", *(selected_tests or ())]
  env = dict(os.environ,
             PYTHONPATH=REPO_ROOT,
             XML_OUTPUT_FILE=xml_path,
             KMODELS_SKIP_REASONS=skips_path)
  start = time.monotonic()
  proc = subprocess.Popen(command,
                          cwd=REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          start_new_session=True)
  try:
    output, _ = proc.communicate(timeout=timeout)
    code = proc.returncode
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # the module and every process it started
    output, _ = proc.communicate()
    output += f"\n{unit} TIMED OUT after {timeout} s (its limit in tests/run_all.py TIMEOUTS)"
    code = "timeout"
  tests, bad, skips = _counts(xml_path, skip_reasons.read(skips_path))
  if os.environ.get("CI") == "true" and code == 0:
    hidden = [f"{t}: {r}" for t, r in skips if not any(w in r for w in EXPECTED_SKIPS)]
    if hidden:  # a prerequisite CI should have installed is missing: a failure, not a skip
      output += "\nUnder CI=true these skips are failures:\n  " + "\n  ".join(hidden)
      code = "skipped a prerequisite"
  return {
      "module": unit,
      "tier": tier(module),
      "multi_process": multi,
      "seconds": round(time.monotonic() - start, 1),
      "status": "ok" if code == 0 else (code if isinstance(code, str) else f"exit {code}"),
      "tests": tests,
      "failed": bad,
      "skipped": len(skips),
      "skips": [{
          "test": t,
          "reason": r
      } for t, r in skips],
      "only": list(selected_tests) if selected_tests else None,
      "output": output
  }


def _report_line(record):
  status = "ok" if record["status"] == "ok" else f"FAILED ({record['status']})"
  only = f" [{', '.join(record['only'])}]" if record["only"] else ""
  return (f"[{status}] {record['module']}{only} ({record['tier']}) in {record['seconds']:.0f}s: "
          f"{record['tests']} tests, {record['skipped']} skipped")


def _summary(records, total_seconds, lane):
  failed = [r["module"] for r in records if r["status"] != "ok"]
  print("\nSlowest modules:")
  for r in sorted(records, key=lambda r: -r["seconds"])[:5]:
    print(f"  {r['seconds']:7.0f}s  {r['module']} ({r['tier']})")
  skips = [(r["module"], s) for r in records for s in r["skips"]]
  print(f"\nSkipped tests: {len(skips)}")
  for module, skip in skips:
    print(f"  {module}: {skip['test']}: {skip['reason']}")
  tests = sum(r["tests"] for r in records)
  bad = sum(r["failed"] for r in records) + sum(
      1 for r in records if r["status"] != "ok" and not r["failed"])
  print(f"\n{len(records) - len(failed)}/{len(records)} test units passed in {total_seconds:.0f}s "
        f"({lane} lane)." + (f" Failed: {', '.join(failed)}" if failed else ""))
  # The plain closing line CI reads.
  print(f"{tests - bad - len(skips)} passed, {bad} failed, {len(skips)} skipped")
  return failed


def _read_times():
  try:
    with open(TIMES_FILE) as f:
      report = json.load(f)
    return report if isinstance(report, dict) else {}
  except (OSError, ValueError):
    return {}


def _last_times(lane):
  modules = _read_times().get(lane, {}).get("modules", {})
  return {name: m.get("seconds", 0) for name, m in modules.items() if isinstance(m, dict)}


def _write_times(records, total_seconds, lane):
  """Replaces this lane's entry of .test_times.json (the other lane's stays)."""
  report = _read_times()
  report[lane] = {
      "total_seconds": round(total_seconds, 1),
      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "modules": {
          r["module"]: {
              k: v for k, v in r.items() if k not in ("module", "output")
          } for r in records
      }
  }
  with open(TIMES_FILE, "w") as f:
    json.dump(report, f, indent=1, sort_keys=True)


def main(args):
  lane = os.environ.get("LANE", "full")
  pending = [unit for module, tests in select(args, lane) for unit in units(module, tests)]
  workers = int(os.environ.get("KMODELS_TEST_JOBS", "2"))
  # Multi-process units first (they run one at a time; others fill the other worker),
  # then longest first by the last run's times (or a first guess), so the workers finish
  # together.
  last = {**FIRST_GUESS, **_last_times(lane)}
  pending.sort(key=lambda unit: (not unit[2], -last.get(unit[0], 0), unit[0]))
  print(
      f"Running {len(pending)} test units ({lane} lane), {workers} at a time, one "
      f"multi-process unit at a time: {', '.join(u for u, _, _ in pending)}",
      flush=True)
  slots, records, lock = _Slots(workers), [], threading.Lock()
  start = time.monotonic()

  def worker():
    while True:
      item = slots.take(pending)
      if item is None:
        return
      record = run_unit(*item)
      slots.give_back(item[2])
      with lock:
        records.append(record)
        print(_report_line(record), flush=True)
        if record["status"] != "ok":
          print(record["output"][-20000:], flush=True)

  threads = [threading.Thread(target=worker) for _ in range(workers)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  total = time.monotonic() - start
  _write_times(records, total, lane)
  return 1 if _summary(records, total, lane) else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
