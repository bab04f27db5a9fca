# The kmodels training image: `python -m launch.train` is the entrypoint, so
#   docker run IMAGE --config=configs/cifar_googlenet.py --workdir=gs://BUCKET/run
# runs a config from this repository; other launchers: --entrypoint python IMAGE -m launch.X
#
#   docker build -t kmodels .                            # CPU, full lane (TF 2.15.1)
#   docker build -t kmodels:gpu --build-arg VARIANT=gpu .  # + tensorflow[and-cuda], same TF
#   docker build --build-arg LANE=current .              # TF 2.21 (no tf.estimator)
# Without registry access, `bash launch/container_base.sh` first builds the default BASE
# from Debian's packages (podman: see kmodels/docs/cloud.md).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG LANE=full
ARG VARIANT=cpu
# Optional: a local package mirror and CA bundle for pip (tests/container_test.py passes
# this machine's); unset, pip uses PyPI.
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/kmodels/venv/bin:$PATH

# The lane's exact pins first: this layer is reused while only kmodels' code changes.
WORKDIR /opt/kmodels
COPY launch/lanes/ launch/lanes/
RUN python3.11 -m venv /opt/kmodels/venv \
 && pip install --quiet -r launch/lanes/${LANE}.txt \
 && if [ "${VARIANT}" = gpu ]; then pip install --quiet -r launch/lanes/gpu-${LANE}.txt; fi

COPY pyproject.toml README.md ./
COPY kmodels/ kmodels/
COPY launch/ launch/
COPY configs/ configs/
RUN pip install --quiet --no-deps --no-build-isolation . \
 && useradd --create-home --uid 1000 kmodels

# Not root. The README's config paths (configs/...) resolve from here; mount a volume or
# use gs:// for --workdir (and for --config.dataset.data_dir).
USER kmodels
ENTRYPOINT ["python", "-m", "launch.train"]
