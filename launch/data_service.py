r"""Starts a tf.data service dispatcher or worker, for input-bound training jobs.

  python -m launch.data_service --dispatcher --port=5050 \
      --worker_addresses=worker-0:5051,worker-1:5051
  python -m launch.data_service --worker --port=5051 --dispatcher_address=dispatcher:5050 \
      --worker_address=worker-0:5051
  python -m launch.train --config=... --workdir=... \
      --config.dataset.service=grpc://dispatcher:5050

Each worker runs the job's whole input pipeline (read, decode, crop, augment, batch) on
its share of the examples; the trainer only reads finished batches. The dispatcher must
list every worker's address (static sharding: each example once per epoch), exactly as
each worker gives it with --worker_address. Workers need the job's data (image_dir or
data_dir) at the same path or gs:// location as the trainer. The servers run until killed.
"""

from absl import app
from absl import flags
from absl import logging

from kmodels.data import data_service
from kmodels.errors import UserError, first_line
from launch import common

_DISPATCHER = flags.DEFINE_bool("dispatcher", False, "Start the dispatcher.")
_WORKER = flags.DEFINE_bool("worker", False, "Start a worker.")
_PORT = flags.DEFINE_integer("port", None, "Port to serve on.", lower_bound=1, upper_bound=65535)
_WORKER_ADDRESSES = flags.DEFINE_list("worker_addresses", None,
                                      "Dispatcher: every worker's HOST:PORT, as each gives it.")
_DISPATCHER_ADDRESS = flags.DEFINE_string("dispatcher_address", None,
                                          "Worker: the dispatcher's HOST:PORT.")
_WORKER_ADDRESS = flags.DEFINE_string(
    "worker_address", None, "Worker: the HOST:PORT the dispatcher and trainers reach it at "
    "(default localhost:PORT).")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "Dispatcher: a directory for its journal, so that a restarted "
    "dispatcher picks up its jobs again.")
flags.mark_flag_as_required("port")


def _start():
  if _DISPATCHER.value == _WORKER.value:
    raise UserError("Pass exactly one of --dispatcher and --worker.")
  try:
    return _start_server()
  except RuntimeError as e:  # gRPC's own refusal: the port is taken or not ours to bind
    raise UserError(f"Could not serve on port {_PORT.value} ({first_line(e)}): another "
                    "process may hold it; pick another --port.") from e


def _start_server():
  if _DISPATCHER.value:
    if not _WORKER_ADDRESSES.value:
      raise UserError("--dispatcher needs --worker_addresses=HOST:PORT,... (every worker, "
                      "as each gives it with --worker_address).")
    server = data_service.dispatcher(_PORT.value, _WORK_DIR.value, _WORKER_ADDRESSES.value)
    logging.info(
        "tf.data service dispatcher at grpc://%s (workers: %s). Train with "
        "--config.dataset.service=grpc://HOST:%d",
        server.target.split("://")[-1], ", ".join(_WORKER_ADDRESSES.value), _PORT.value)
    return server
  if not _DISPATCHER_ADDRESS.value:
    raise UserError("--worker needs --dispatcher_address=HOST:PORT.")
  address = _WORKER_ADDRESS.value or f"localhost:{_PORT.value}"
  server = data_service.worker(_PORT.value, _DISPATCHER_ADDRESS.value, address)
  logging.info("tf.data service worker %s serving dispatcher %s.", address,
               _DISPATCHER_ADDRESS.value)
  return server


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    server = _start()
  server.join()


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
