"""gs:// against a local GCS emulator, for development and tests (the `emulator` extra).

With STORAGE_EMULATOR_HOST set, route_gs_to_emulator() starts gcs_proxy.py (beside this
file) as a child process and points TensorFlow's libcurl at it; gcs_proxy.py says how and
why. Never used against real Google Cloud Storage.
"""

import functools
import os
import subprocess
import sys
import tempfile
import urllib.parse

from absl import logging

from kmodels.errors import UserError
from kmodels.storage import EMULATOR_VARIABLE


def route_gs_to_emulator() -> bool:
  """With STORAGE_EMULATOR_HOST set, sends every gs:// access of this process there.

  Points TensorFlow's libcurl at the proxy (HTTPS_PROXY, CURL_CA_BUNDLE), with a test token
  instead of Google credentials. Must run before TensorFlow first touches gs://. Without
  the variable nothing changes. Returns whether the route is on.
  """
  endpoint = os.environ.get(EMULATOR_VARIABLE, "").strip()
  if not endpoint:
    return False
  if "://" not in endpoint:
    endpoint = "http://" + endpoint
  _check_endpoint(endpoint)
  port, certdir = _start_proxy(endpoint)
  logging.info(
      "gs:// goes to the GCS emulator at %s (%s is set), through a local TLS "
      "proxy on port %s.", endpoint, EMULATOR_VARIABLE, port)
  # Upper case on purpose: libcurl reads HTTPS_PROXY, gRPC (multi-worker collectives)
  # reads only lower-case https_proxy, so workers keep talking to each other directly.
  os.environ["HTTPS_PROXY"] = f"http://127.0.0.1:{port}"
  os.environ["CURL_CA_BUNDLE"] = os.path.join(certdir, "ca.pem")
  os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
  os.environ["NO_GCE_CHECK"] = "true"  # never ask a GCE metadata server for credentials
  return True


def _check_endpoint(endpoint):
  """The emulator's address must be http(s)://HOST[:PORT]; anything else is a typo."""
  try:
    url = urllib.parse.urlsplit(endpoint)
    usable = (
        url.scheme in ("http", "https") and bool(url.hostname) and
        (url.port is None or url.port > 0)  # .port raises outside 0-65535
        and not any(c.isspace() for c in endpoint))
  except ValueError:
    usable = False
  if not usable:
    raise UserError(f"{EMULATOR_VARIABLE}={os.environ[EMULATOR_VARIABLE]!r} is not an "
                    "emulator address: set it like http://127.0.0.1:4443 (or unset it to "
                    "use Google Cloud Storage).")


@functools.lru_cache(maxsize=None)  # one proxy per process and endpoint
def _start_proxy(endpoint):
  """Starts the proxy (it exits with this process); returns (its port, its CA's dir)."""
  certdir = tempfile.mkdtemp(prefix="kmodels-gcs-proxy-")
  proxy = subprocess.Popen([
      sys.executable,
      os.path.join(os.path.dirname(__file__), "gcs_proxy.py"), f"--upstream={endpoint}",
      f"--certdir={certdir}"
  ],
                           stdout=subprocess.PIPE,
                           text=True)
  port = proxy.stdout.readline().strip()
  if not port.isdigit():
    raise UserError(f"Could not start the proxy to the GCS emulator {endpoint} "
                    f"({EMULATOR_VARIABLE}); is the `cryptography` package installed "
                    "(pip install 'kmodels[emulator]')?")
  return port, certdir
