# syntax=docker/dockerfile:1
# rain-avatar on one NVIDIA GPU (made for an RTX 4090). The weights are not in the image: they
# live in the volume /weights, filled by `rain-avatar fetch-weights` (docker/compose.yaml runs
# it first). Build and run: docker/README.md. Never built here: the development machines have
# no Docker engine; tests/test_docker.py and hadolint check this file statically.

# CUDA 12.8 on Ubuntu 22.04 (Python 3.11 from its archive). The `base` flavour, not
# `cudnn-runtime`: the torch wheels bring CUDA runtime, cuBLAS and cuDNN as nvidia-* wheels,
# so the runtime image would hold those libraries twice (about 3 GB more).
FROM nvidia/cuda:12.8.1-base-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Unpinned on purpose: the base image tracks Ubuntu's security updates, and exact patch
# versions disappear from the archive, which would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv "$VIRTUAL_ENV"

# An unprivileged user, and the weights and recordings mount points owned by it: a new named
# volume takes this ownership, so `fetch-weights` and recordings can write there without root.
RUN useradd --create-home --uid 1000 --user-group rain \
 && mkdir /weights /recordings \
 && chown 1000:1000 /weights /recordings

# Layers from the least to the most often changed. torch first, from the official PyTorch
# wheels for CUDA 12.8 (sm_89 included); the version must be the one pyproject.toml pins.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"

# The other dependencies, read from pyproject.toml so that the image installs exactly the
# project's requirements (torch is already satisfied: 2.13.0+cu128 meets ==2.13.0), and those
# of the extras named in RAIN_EXTRAS (`--build-arg RAIN_EXTRAS=ray` for Ray Serve, as
# docker/compose.ray.yaml builds it; none by default). One resolve for both, so that an extra
# cannot upgrade what a dependency pins (Ray's protobuf against mediapipe's protobuf<5).
WORKDIR /app
COPY pyproject.toml ./
ARG RAIN_EXTRAS=""
RUN python -c "import sys, tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [r for name in sys.argv[1].split(',') if name for r in project['optional-dependencies'][name]]; \
print('\n'.join(project['dependencies'] + extras))" "$RAIN_EXTRAS" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself; a code change rebuilds only this layer.
COPY README.md ./
COPY rain_core ./rain_core
COPY server ./server
COPY web ./web
RUN pip install --no-deps .

USER 1000:1000
VOLUME ["/weights"]
EXPOSE 8000
# Loading the official weights (several GB) and warming the GPU up takes minutes on first start.
# Exec form: Docker counts any non-zero exit (curl -f gives 7 or 22) as a failed check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/api/health"]
CMD ["rain-avatar", "serve", "--host", "0.0.0.0", "--weights", "/weights"]
