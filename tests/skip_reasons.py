"""Runs one test module as __main__ and appends each skipped test's reason to a file.

  KMODELS_SKIP_REASONS=/tmp/skips.jsonl python -m tests.skip_reasons tests.data_test [tests...]

absltest's XML report marks a skipped test `result="suppressed"` but drops its reason, and
its console output prints none either; tests/run_all.py needs the reason to print it and,
under CI=true, to tell another lane's test from a missing prerequisite.
"""

import json
import os
import runpy
import sys
import unittest


def _record_skips(path):
  add_skip = unittest.TestResult.addSkip  # every result class, absltest's too, ends here

  def recording_add_skip(result, test, reason):
    with open(path, "a") as f:
      f.write(json.dumps({"test": test.id(), "reason": reason}) + "\n")
    add_skip(result, test, reason)

  unittest.TestResult.addSkip = recording_add_skip


def read(path):
  """{test id: reason} from a file written by a module run through this wrapper."""
  try:
    with open(path) as f:
      return {entry["test"]: entry["reason"] for entry in map(json.loads, f) if entry}
  except OSError:
    return {}


if __name__ == "__main__":
  module, *test_args = sys.argv[1:]
  _record_skips(os.environ["KMODELS_SKIP_REASONS"])
  sys.argv = [module, *test_args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)
