"""One run per workdir: two would overwrite each other's checkpoints and results.

Local workdirs: an `fcntl.flock` on WORKDIR/.lock. The kernel releases it when the process
dies however it dies (kill -9, OOM), so there is no pid guessing: a crashed run never
blocks the next one, a recycled pid or a trainer running as PID 1 in a container never
fools it, and two runs started at the same instant cannot both win. The file holds the
owner's pid, host and start time for the refusal message only.

Object stores (gs://): no locks and no create-if-absent through tf.io.gfile (GCS offers
a generation precondition, and TensorFlow's mkdir sends one, but gfile turns its "already
exists" answer into success). So the lock is an owner object, best effort:
- a run refuses a workdir whose lock object names a live owner: another host whose lease
  (refreshed every LEASE_REFRESH_SECONDS) is younger than LEASE_SECONDS, or a process on
  this host that still exists;
- after writing its own owner object it waits SETTLE_SECONDS and reads it back; if another
  run's object replaced it, it leaves. Two runs started within about a second of each other
  can still both start: the limit is written down in BUILD_NOTES.md.
"""

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging

from kmodels import storage
from kmodels.errors import UserError

LEASE_SECONDS = 300
LEASE_REFRESH_SECONDS = 60
SETTLE_SECONDS = 1.0


def _owner():
  return {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started": time.strftime("%Y-%m-%d %H:%M:%S"),
      "heartbeat": time.time(),
      "token": uuid.uuid4().hex
  }


def _in_use(root, holder, lock_path):
  holder = holder or {}
  return UserError(
      f"Workdir {root} is in use by another run (pid {holder.get('pid', '?')} on "
      f"{holder.get('host', '?')}, since {holder.get('started', '?')}). Wait for it to end "
      f"or use another --workdir" +
      (f"; if that run is gone, delete {lock_path}." if storage.has_scheme(lock_path) else "."))


def acquire(lock_path, root):
  """Takes the lock of the workdir `root`; returns an object with release()."""
  if storage.has_scheme(lock_path):
    return _ObjectLock.acquire(lock_path, root)
  return _FileLock.acquire(lock_path, root)


class _FileLock:
  """flock on a local file; released by the kernel when the process ends."""

  def __init__(self, path, fd):
    self.path, self._fd = path, fd

  @classmethod
  def acquire(cls, path, root):
    while True:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
          raise
        raise _in_use(root, _read_owner(path), path) from None
      # The holder before us may have unlinked the file between our open and our flock:
      # then we hold a lock on a file nobody else will ever open. Start over.
      try:
        same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same_file = False
      if same_file:
        break
      os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(_owner()).encode())
    return cls(path, fd)

  def release(self):
    # Unlinked while still locked, so nobody can lock the old file after us (see acquire).
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(self._fd)


def _read_owner(path):
  """The owner JSON of a lock, or None if it is missing or still being written."""
  try:
    return json.loads(storage.read_text(path))
  except Exception:  # pylint: disable=broad-except  (half-written, gone, unreadable)
    return None


def _is_live(holder):
  if holder is None:
    return False
  if holder.get("host") == socket.gethostname():
    try:
      os.kill(int(holder["pid"]), 0)
      return True
    except ProcessLookupError:
      return False
    except (PermissionError, KeyError, TypeError, ValueError):
      return True
  return time.time() - float(holder.get("heartbeat", 0)) < LEASE_SECONDS


class _ObjectLock:
  """An owner object with a lease, refreshed by a daemon thread (see the module doc)."""

  def __init__(self, path, owner):
    self.path, self.owner = path, owner
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._refresh, daemon=True, name="kmodels-lock-lease")
    self._thread.start()

  @classmethod
  def acquire(cls, path, root):
    holder = _read_owner(path)
    if _is_live(holder):
      raise _in_use(root, holder, path)
    if holder is not None:
      logging.warning("Taking over the lock of a run that is gone: %s", holder)
    owner = _owner()
    storage.write_atomic(path, json.dumps(owner))
    time.sleep(SETTLE_SECONDS)
    now = _read_owner(path)
    if not now or now.get("token") != owner["token"]:
      raise _in_use(root, now, path)
    return cls(path, owner)

  def _refresh(self):
    while not self._stop.wait(LEASE_REFRESH_SECONDS):
      self.owner["heartbeat"] = time.time()
      try:
        storage.write_atomic(self.path, json.dumps(self.owner))
      except Exception as e:  # pylint: disable=broad-except  (retried at the next refresh)
        logging.warning("Could not refresh the workdir lock %s: %s", self.path, e)

  def release(self):
    self._stop.set()
    if (_read_owner(self.path) or {}).get("token") == self.owner["token"]:
      storage.remove(self.path)
