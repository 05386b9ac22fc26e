# syntax=docker/dockerfile:1
# selfreward images: one file, two targets (docs/gpu.md). `make docker-build` builds both.
#   cpu  slim Python 3.11 + the CPU build of torch: `make iterate` on the default (CPU) profile.
#   gpu  CUDA 13 base + the CUDA build of torch + vLLM: the pipeline on self-hosted GPU runners.
# Both install through the Makefile (`make install`, `make install-gpu`), i.e. from
# requirements.lock, the one pinned requirements source; the gpu image adds requirements-gpu.lock
# (vllm 0.32.0 pins torch==2.13.0 = TORCH_SPEC, and accepts the lock's transformers 5.19.0).
# Nothing secret is baked in: the DVC remote's credentials come from the environment at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# torch 2.13.0 from PyPI brings its own CUDA 13 libraries (nvidia-* wheels); the base image adds
# the driver hooks of the NVIDIA container runtime. Host driver >= 580.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-base-ubuntu22.04

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
# The runner's uid, so files written into a mounted checkout belong to the caller.
ARG APP_UID=1000
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends make git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${APP_UID}" app \
 && install -d -o app /opt/venv
USER app
WORKDIR /home/app/selfreward
# Dependencies first: this layer stays cached until requirements.lock or pyproject.toml change.
# The editable install points at src/, which the second COPY fills.
COPY --chown=app Makefile requirements.lock pyproject.toml README.md ./
RUN mkdir -p src \
 && make install VENV=/opt/venv PYTHON=python3 TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=app . .
# The image has no .git (it could carry a CI token): DVC runs without SCM here.
RUN dvc config --local core.no_scm true
CMD ["make", "-o", "install", "iterate", "VENV=/opt/venv"]

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
ARG APP_UID=1000
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Python 3.11 as in requirements.lock; gcc and the headers because Triton (vLLM) compiles small
# launcher modules at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev gcc \
      make git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${APP_UID}" app \
 && install -d -o app /opt/venv
USER app
WORKDIR /home/app/selfreward
COPY --chown=app Makefile requirements.lock requirements-gpu.lock pyproject.toml README.md ./
RUN mkdir -p src \
 && make install-gpu VENV=/opt/venv PYTHON=python3.11
COPY --chown=app . .
RUN dvc config --local core.no_scm true
CMD ["make", "-o", "install", "iterate", "VENV=/opt/venv"]
