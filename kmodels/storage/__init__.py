"""Every file kmodels reads or writes goes through here: local paths and URLs alike.

Paths with a scheme (`gs://`, `s3://` with tensorflow-io, `hdfs://`, `ram://`) go to
`tf.io.gfile` and never through `os.path`; local paths behave as before. One consequence
for object stores, which have no atomic rename: `write_atomic` writes a temporary object
and renames it (copy, then delete), so a reader sees the old object or the new one, never
half of one, but may briefly see the `.tmp-*` object beside it.

The room also holds the workdir lock (locks.py) and the development route of `gs://` to a
local GCS emulator (emulator.py, gcs_proxy.py; the `emulator` extra).
"""

import contextlib
import io
import os
import posixpath
import tempfile
import time
import uuid

import tensorflow as tf

from kmodels.errors import UserError, first_line


def has_scheme(path: str) -> bool:
  """Whether `path` is a URL (gs://bucket/x), as opposed to a local path."""
  return "://" in str(path)


def absolute(path: str) -> str:
  """Local paths made absolute (~ expanded); URLs as they are, minus a trailing slash."""
  path = str(path)
  if has_scheme(path):
    return path.rstrip("/") if not path.endswith("://") else path
  return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
  base = str(base)
  return posixpath.join(base, *parts) if has_scheme(base) else os.path.join(base, *parts)


def dirname(path: str) -> str:
  return posixpath.dirname(path) if has_scheme(path) else os.path.dirname(path)


def basename(path: str) -> str:
  return posixpath.basename(str(path).rstrip("/"))


exists = tf.io.gfile.exists
isdir = tf.io.gfile.isdir
makedirs = tf.io.gfile.makedirs
glob = tf.io.gfile.glob
listdir = tf.io.gfile.listdir


def remove(path: str) -> None:
  """Removes a file or a whole directory tree; a missing path is fine."""
  if not tf.io.gfile.exists(path):
    return
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  else:
    tf.io.gfile.remove(path)


def rename(source: str, target: str) -> None:
  tf.io.gfile.rename(source, target, overwrite=True)


def read_text(path: str) -> str:
  with tf.io.gfile.GFile(path, "r") as f:
    return f.read()


def write_atomic(path: str, content) -> None:
  """Writes `content` (str or bytes) so a crash mid-write never leaves half a file.

  Locally a rename within the directory is atomic. On object stores rename is copy +
  delete: readers see the old or the new object whole.
  """
  temporary = join(dirname(path) or ".", f".tmp-{uuid.uuid4().hex}-{basename(path)}")
  mode = "wb" if isinstance(content, bytes) else "w"
  with tf.io.gfile.GFile(temporary, mode) as f:
    f.write(content)
  rename(temporary, path)


def save_figure(figure, path: str, **kwargs) -> None:
  """matplotlib's savefig to any path (it only writes local files itself)."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".") or "png", **kwargs)
  write_atomic(path, buffer.getvalue())


@contextlib.contextmanager
def local_copy_for_writing(path: str):
  """A local path to write `path` through (for tools that only write local files)."""
  if not has_scheme(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="kmodels-upload-") as scratch:
    local = os.path.join(scratch, basename(path))
    yield local
    copy_tree(local, path)


@contextlib.contextmanager
def local_copy(path: str):
  """A local path to read `path` through (for libraries that only open local files)."""
  if not has_scheme(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="kmodels-download-") as scratch:
    local = os.path.join(scratch, basename(path))
    copy_tree(path, local)
    yield local


def copy_tree(source: str, target: str) -> None:
  """Copies a file or directory tree between any two filesystems gfile knows."""
  if not tf.io.gfile.isdir(source):
    tf.io.gfile.copy(source, target, overwrite=True)
    return
  for directory, _, files in tf.io.gfile.walk(source):
    relative = os.path.relpath(
        directory, source) if not has_scheme(source) else (directory[len(source):].strip("/"))
    destination = join(target, relative) if relative not in ("", ".") else target
    tf.io.gfile.makedirs(destination)
    for name in files:
      tf.io.gfile.copy(join(directory, name), join(destination, name), overwrite=True)


EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"  # kmodels.storage.emulator


def check_reachable(url: str, what: str) -> None:
  """Fails fast, with a UserError naming `url`, when its bucket/filesystem can't be used."""
  if not has_scheme(url):
    return
  scheme, _, rest = url.partition("://")
  root = f"{scheme}://{rest.split('/')[0]}"
  start = time.monotonic()
  try:
    tf.io.gfile.stat(root)  # isdir/exists would turn every error into False
  except tf.errors.NotFoundError as e:
    raise UserError(f"{what} {url}: the bucket {root} does not exist (or these credentials "
                    "cannot see it). Create it, e.g. `gcloud storage buckets create "
                    f"{root}`, or fix the URL.") from e
  except (tf.errors.OpError, OSError) as e:
    raise UserError(_unreachable(url, what, e, time.monotonic() - start)) from e


def _unreachable(url, what, error, seconds):
  reason = first_line(error, 300) or type(error).__name__
  hints = []
  if isinstance(error, (tf.errors.PermissionDeniedError, tf.errors.UnauthenticatedError)):
    hints.append("no credentials with access: run `gcloud auth application-default login` "
                 "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key")
  else:
    hints.append("check the network, the URL and your credentials")
  if os.environ.get(EMULATOR_VARIABLE):
    hints.append(f"{EMULATOR_VARIABLE}={os.environ[EMULATOR_VARIABLE]} is set: is the "
                 "emulator running there?")
  return (f"{what} {url} is unreachable after {seconds:.0f} s: {type(error).__name__}: "
          f"{reason}. {'; '.join(hints)}.")
