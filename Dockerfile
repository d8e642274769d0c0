# syntax=docker/dockerfile:1
# protolens container images. Two targets, each runs the API or a worker:
#   docker build --target cpu  -t protolens:cpu  .    # CPU-only torch (default target)
#   docker build --target cuda -t protolens:cuda .    # torch's CUDA build; run with --gpus all
#   docker run protolens:cpu serve | worker           # (ENTRYPOINT is `protolens`)
# Settings come from PROTOLENS_* environment variables (server/protolens_server/config.py).
# Versions are pinned here and in deploy/docker/constraints-server.txt.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: a virtual environment at /opt/protolens, compilers allowed --------
FROM ${PYTHON_IMAGE} AS builder-base
# Extra Debian packages for building sdists (none needed today: every pinned
# dependency ships a manylinux wheel). They never reach the final images.
ARG BUILD_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN if [ -n "$BUILD_PACKAGES" ]; then \
      apt-get update && apt-get install -y --no-install-recommends $BUILD_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/protolens
ENV PATH=/opt/protolens/bin:$PATH
WORKDIR /src
# An optional wheelhouse/ folder in the build context is used as a local package
# source (offline builds); the constraints file is listed so the COPY never matches nothing.
COPY deploy/docker/constraints-server.txt wheelhous[e] /wheelhouse/
COPY deploy/docker/constraints-server.txt /src/constraints.txt

FROM builder-base AS builder-cpu
ARG PIP_INSTALL_ARGS=""
ARG TORCH_SPEC="torch==2.13.0+cpu"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --find-links /wheelhouse $PIP_INSTALL_ARGS \
      --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple \
      -c constraints.txt "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN pip install --find-links /wheelhouse $PIP_INSTALL_ARGS -c constraints.txt ".[server,s3]"

FROM builder-base AS builder-cuda
ARG PIP_INSTALL_ARGS=""
# PyPI's Linux torch wheels are the CUDA builds; they bring the CUDA runtime,
# cuDNN and NCCL as nvidia-* wheels, so the base needs only the host driver.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://pypi.org/simple
RUN pip install --find-links /wheelhouse $PIP_INSTALL_ARGS \
      --index-url "$TORCH_INDEX_URL" -c constraints.txt "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
RUN pip install --find-links /wheelhouse $PIP_INSTALL_ARGS -c constraints.txt ".[server,s3]"

# ---- runtime: no compilers, no sources, a non-root user ---------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 protolens \
 && useradd --system --uid 10001 --gid protolens --create-home \
      --home-dir /home/protolens --shell /usr/sbin/nologin protolens \
 && install -d -o protolens -g protolens /home/protolens/blobs
ENV PATH=/opt/protolens/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/protolens \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    PROTOLENS_GRPC_HOST=0.0.0.0 \
    PROTOLENS_GRPC_PORT=50051 \
    PROTOLENS_METRICS_PORT=9464
WORKDIR /home/protolens
USER 10001:10001
EXPOSE 50051 9464
# grpc.health.v1 on the API port; workers override it with `--metrics` (Compose)
# and Kubernetes uses its own gRPC / HTTP probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "protolens_server.healthcheck"]
ENTRYPOINT ["protolens"]
CMD ["serve"]

FROM runtime AS cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=builder-cuda /opt/protolens /opt/protolens

FROM runtime AS cpu
COPY --from=builder-cpu /opt/protolens /opt/protolens
