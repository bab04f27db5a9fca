#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist (the real Fashion-MNIST files, offline) when they
# are missing and apt-get is there; prints their directory. Used by the quickstart and the
# test suite (its real-pictures test reads them).
set -euo pipefail
ARCHIVES=/usr/share/datasets/fashion-mnist
if [ ! -f "$ARCHIVES/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null; then
  echo "[kmodels] installing Debian's dataset-fashion-mnist (real Fashion-MNIST files)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } >/dev/null; then
    echo "[kmodels] could not install Debian's dataset-fashion-mnist (apt-get failed)" >&2
    # In CI the real pictures are a prerequisite: the tests that read them must run.
    [ "${CI:-}" != "true" ] || exit 1
  fi
fi
echo "$ARCHIVES"
