"""The absltest suite (`python -m tests.run_all`, or `python -m tests.NAME_test`).

Every test module is imported through this package, so the process is set up as the
launchers set it up (kmodels.runtime.configure) before a test imports TensorFlow.
"""

from kmodels import runtime

runtime.configure()
