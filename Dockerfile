# The reprogrid image: CLI, scheduler and GPU worker.
# torch comes first, from the index of the CUDA build the GPU machines need.
FROM python:3.11-slim

ARG TORCH_VERSION=2.7.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY reprogrid ./reprogrid
COPY examples ./examples
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 reprogrid \
    && mkdir -p /store /hf-cache /gpu-locks \
    && chown reprogrid /store /hf-cache /gpu-locks

USER reprogrid
ENV REPROGRID_STORE=/store HF_HOME=/hf-cache PYTHONUNBUFFERED=1
CMD ["reprogrid", "--help"]
