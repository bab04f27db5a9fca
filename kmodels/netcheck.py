"""A quick "is anybody there?" check before calls that would otherwise wait for minutes."""

import socket


def reachable(host, port, timeout_seconds):
  """Whether a TCP connection to host:port opens within `timeout_seconds`."""
  try:
    socket.create_connection((host, port), timeout=timeout_seconds).close()
    return True
  except OSError:
    return False
