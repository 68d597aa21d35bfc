# GPU image for rain-avatar. Weights live in a volume at /weights, never in the image.
# Not buildable on the development machines (no Docker engine there); see README.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip curl \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 rain
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rain_core ./rain_core
COPY server ./server
COPY web ./web
# PyPI's torch 2.13.0 wheel for Linux is the CUDA build.
RUN python3.11 -m venv /opt/venv && /opt/venv/bin/pip install .
ENV PATH=/opt/venv/bin:$PATH

USER rain
VOLUME ["/weights"]
CMD ["rain-avatar", "info", "--profile", "official", "--weights", "/weights"]
