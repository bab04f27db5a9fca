#!/usr/bin/env bash
# Builds the Dockerfile's default base image offline, from Debian's packages alone, and
# tags it as that base (python:3.11-slim-bookworm), for machines without registry access.
#   bash launch/container_base.sh            # once; later runs reuse the image
# Needs root (apt-get, debootstrap). Installs podman, runc and debootstrap if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="docker.io/library/python:3.11-slim-bookworm"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/launch/containers.conf}"
missing=""
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "[container_base] installing$missing" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >/dev/null
fi
if podman image exists "$TAG"; then
  echo "[container_base] $TAG exists" >&2
  exit 0
fi
# The machine's own Debian mirror (deb822 sources, else the classic list, else Debian's).
MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
MIRROR="${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
echo "[container_base] debootstrap bookworm from $MIRROR" >&2
debootstrap --variant=minbase \
  --include=python3.11,python3.11-venv,python3-distutils,python3-pip,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >/dev/null
tar -C "$ROOT" -c . | podman import --quiet - "$TAG" >/dev/null
echo "[container_base] tagged $TAG" >&2
