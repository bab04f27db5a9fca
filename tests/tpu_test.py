"""`distribution.strategy=tpu` on a machine without a TPU: clear errors, never a hang."""

import socket
import threading
import time

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
from kmodels import distribute
from kmodels.errors import UserError


def _tpu_config(target, timeout=3):
  return testutil.tiny_config(distribution__strategy="tpu",
                              distribution__tpu=target,
                              distribution__connect_timeout_seconds=timeout).distribution


class TpuTest(parameterized.TestCase):

  def assert_fails_fast(self, distribution_config, *fragments, within=30):
    start = time.monotonic()
    with self.assertRaises(UserError) as ctx:
      distribute.get_strategy(distribution_config)
    self.assertLess(time.monotonic() - start, within)
    for fragment in fragments:
      self.assertIn(fragment, str(ctx.exception))

  def test_no_target_says_what_to_give(self):
    self.assert_fails_fast(_tpu_config(None), "needs distribution.tpu", "'local'", "grpc://")

  def test_local_without_a_tpu_exits_with_what_was_tried(self):
    # Through the launcher: connecting changes TensorFlow's process-wide context.
    start = time.monotonic()
    proc = testutil.run_launcher("train",
                                 "--config=configs/base.py",
                                 f"--workdir={self.create_tempdir().full_path}",
                                 "--config.dataset.source=synthetic",
                                 "--config.distribution.strategy=tpu",
                                 "--config.distribution.tpu=local",
                                 timeout=120)
    self.assertLess(time.monotonic() - start, 60)
    testutil.assert_user_error(self, proc, "TPUClusterResolver(tpu='local')")

  def test_address_nobody_listens_on(self):
    port = testutil.free_ports(1)[0]
    self.assert_fails_fast(_tpu_config(f"grpc://127.0.0.1:{port}"), "Nothing answers", within=15)

  def test_malformed_address(self):
    self.assert_fails_fast(_tpu_config("grpc://no-port-here"), "use grpc://HOST:PORT")

  def test_address_that_accepts_but_never_answers_gives_up_in_time(self):
    # A TCP listener that accepts and stays silent: gRPC alone would wait for minutes.
    server = socket.create_server(("127.0.0.1", 0))
    self.addCleanup(server.close)
    threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
    port = server.getsockname()[1]
    self.assert_fails_fast(_tpu_config(f"grpc://127.0.0.1:{port}", timeout=3),
                           "No answer within 3 s",
                           "connect_timeout_seconds",
                           within=20)


if __name__ == "__main__":
  absltest.main()
