# The reprogrid image: CLI, scheduler, GPU worker and Flower.
#
# Every package comes from requirements.lock, pinned with its hashes, so images
# built on different days hold the same torch, diffusers and transformers. The
# lock holds torch 2.7.1 as PyPI ships it for Linux x86_64 and Python 3.11 (the
# base image below): the CUDA 12.6 build, with its nvidia-* libraries. To move
# any version, or to another CUDA build, regenerate the lock with the command
# in README.md, "Deployment"; tests/test_deployment.py checks it against
# pyproject.toml.
FROM python:3.11-slim

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock

COPY pyproject.toml README.md ./
COPY reprogrid ./reprogrid
COPY examples ./examples
# reprogrid itself, with nothing more: its dependencies are all in the lock
# (pip check fails the build if one is missing), built with the locked setuptools.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && useradd --create-home --uid 1000 reprogrid \
    && mkdir -p /store /hf-cache /gpu-locks \
    && chown reprogrid /store /hf-cache /gpu-locks

USER reprogrid
ENV REPROGRID_STORE=/store HF_HOME=/hf-cache PYTHONUNBUFFERED=1
CMD ["reprogrid", "--help"]
