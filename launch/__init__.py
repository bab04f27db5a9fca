"""absl entry points: `python -m launch.train`, `launch.prepare_data`, ...

Every launcher starts here, so the process is set up (kmodels.runtime.configure: Keras 2,
TensorFlow's settings) before a launcher imports TensorFlow.
"""

import time

PROCESS_START = time.time()  # before TensorFlow's import: time to first step counts it

from kmodels import runtime  # noqa: E402

runtime.configure()
