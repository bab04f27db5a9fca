"""tf.data service: a job's preprocessing on other machines (dataset.service=grpc://HOST:PORT).

An input-bound job (JPEG decoding at 224 px outruns a GPU host's CPUs) sends its input
pipeline to tf.data service workers, TensorFlow's own distributed input engine: a
dispatcher hands the dataset graph to the workers, each runs it, and the trainers read
the finished batches over gRPC. `python -m launch.data_service` starts both kinds.

Sharding: "distributed_epoch" would need every source dataset of the pipeline to be
splittable, which the position-seeded per-example crops (an `enumerate` zip) are not. So
the pipeline marks where to shard, right after reading and before decoding
(data._service_shard), and each worker keeps its own share there (ShardingPolicy.HINT,
static: the dispatcher is told the workers' addresses). Every example is decoded once per
epoch over all workers. Batches arrive from the workers in no fixed order, so a resume
through the service does not replay the exact batches of an unbroken run (without the
service, it does).
"""

import urllib.parse

import tensorflow as tf

from kmodels import netcheck
from kmodels.errors import UserError

PROTOCOL = "grpc"


def parse_address(service):
  """'grpc://host:port' -> ('grpc', 'host:port'), or UserError saying what is expected."""
  parsed = urllib.parse.urlparse(service)
  if parsed.scheme != PROTOCOL or not parsed.hostname or not parsed.port or parsed.path:
    raise UserError(f"dataset.service={service!r} is not a tf.data service dispatcher "
                    "address; give grpc://HOST:PORT (start one with python -m "
                    "launch.data_service --dispatcher --port=PORT).")
  return PROTOCOL, f"{parsed.hostname}:{parsed.port}"


# tf.data service clients retry an absent dispatcher forever: a job pointed at a wrong
# address would hang silently. One TCP probe first turns that into an error.
_PROBE_SECONDS = 10


def _check_dispatcher(service, address):
  """A UserError unless something listens at the dispatcher's host:port `address`."""
  host, port = address.rsplit(":", 1)
  if not netcheck.reachable(host, int(port), _PROBE_SECONDS):
    raise UserError(f"No tf.data service dispatcher answers at {service} (dataset.service) "
                    f"within {_PROBE_SECONDS} s. Start one there (python -m "
                    "launch.data_service --dispatcher --port=PORT --worker_addresses=...) "
                    "or fix the address.")


def distribute(ds, service):
  """`ds` read from the tf.data service at `service`, each example once per epoch."""
  protocol, address = parse_address(service)
  _check_dispatcher(service, address)
  return ds.apply(
      tf.data.experimental.service.distribute(
          processing_mode=tf.data.experimental.service.ShardingPolicy.HINT,
          service=f"{protocol}://{address}"))


def dispatcher(port, work_dir=None, worker_addresses=None):
  """A started dispatcher. Static sharding needs the workers' addresses up front."""
  config = tf.data.experimental.service.DispatcherConfig(port=port,
                                                         protocol=PROTOCOL,
                                                         work_dir=work_dir,
                                                         fault_tolerant_mode=bool(work_dir),
                                                         worker_addresses=worker_addresses)
  return tf.data.experimental.service.DispatchServer(config)


def worker(port, dispatcher_address, worker_address=None):
  """A started worker registered with the dispatcher at `dispatcher_address` (host:port)."""
  config = tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher_address,
                                                     port=port,
                                                     protocol=PROTOCOL,
                                                     worker_address=worker_address)
  return tf.data.experimental.service.WorkerServer(config)
