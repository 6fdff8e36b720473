# syntax=docker/dockerfile:1
# ilid-async images. Two targets:
#   docker build --target cuda -t ilid-async:cuda .   llama.cpp with CUDA (no GPU needed to build)
#   docker build --target cpu  -t ilid-async:cpu  .   CPU only, on python:3.11-slim
# Every install step is in scripts/install-container.sh, which CI runs outside Docker as well.
# The final stages run as uid 1000 ("ilid"), given numerically so that runtimes which check for
# a non-root user (Kubernetes runAsNonRoot) need not resolve a name.
# Build arguments:
#   CUDA_ARCHITECTURES  compute capabilities to compile for (default 80;86;89;90 =
#                       A100, RTX 30xx/A10, RTX 40xx/L4/L40, H100/H200)
#   PILLOW_SIMD_AVX2    1 builds pillow-simd with AVX2 (default), 0 for CPUs without it

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_VERSION=22.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- CUDA: build on the devel image (nvcc, headers), run on the runtime image -----------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS cuda-build
ARG CUDA_ARCHITECTURES="80;86;89;90"
ARG PILLOW_SIMD_AVX2=1
ENV ILID_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} \
    ILID_PILLOW_SIMD_AVX2=${PILLOW_SIMD_AVX2} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY scripts/install-container.sh scripts/install-llama-cpp.sh scripts/llama-cpu-flags.sh scripts/llama-slim.cmake scripts/
RUN bash scripts/install-container.sh system cuda
# llama-cpp-python first, in its own layer: its CUDA build is by far the longest step, and
# the package's sources change more often than it does.
# hadolint ignore=DL3059
RUN bash scripts/install-container.sh llama cuda /opt/ilid/venv
COPY pyproject.toml README.md config.toml ./
COPY ilid_async ilid_async
COPY shops shops
RUN bash scripts/install-container.sh python cuda /opt/ilid/venv \
    && bash scripts/install-container.sh share /opt/ilid \
    && bash scripts/install-container.sh runtime-packages /opt/ilid/venv > /opt/ilid/runtime-packages.txt

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS cuda
COPY --from=cuda-build /opt/ilid /opt/ilid
RUN bash /opt/ilid/install-container.sh runtime /opt/ilid/runtime-packages.txt \
    && rm -rf /var/lib/apt/lists/* \
    && ILID_UID=1000 bash /opt/ilid/install-container.sh user
ENV PATH=/opt/ilid/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /data
VOLUME ["/data", "/models"]
ENTRYPOINT ["ilid-async"]
CMD ["--help"]

# --- CPU only --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
ARG PILLOW_SIMD_AVX2=1
ENV ILID_PILLOW_SIMD_AVX2=${PILLOW_SIMD_AVX2} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY scripts/install-container.sh scripts/install-llama-cpp.sh scripts/llama-cpu-flags.sh scripts/llama-slim.cmake scripts/
RUN bash scripts/install-container.sh system cpu
# hadolint ignore=DL3059
RUN bash scripts/install-container.sh llama cpu /opt/ilid/venv
COPY pyproject.toml README.md config.toml ./
COPY ilid_async ilid_async
COPY shops shops
RUN bash scripts/install-container.sh python cpu /opt/ilid/venv \
    && bash scripts/install-container.sh share /opt/ilid \
    && bash scripts/install-container.sh runtime-packages /opt/ilid/venv > /opt/ilid/runtime-packages.txt

FROM ${PYTHON_IMAGE} AS cpu
COPY --from=cpu-build /opt/ilid /opt/ilid
RUN bash /opt/ilid/install-container.sh runtime /opt/ilid/runtime-packages.txt \
    && rm -rf /var/lib/apt/lists/* \
    && ILID_UID=1000 bash /opt/ilid/install-container.sh user
ENV PATH=/opt/ilid/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /data
VOLUME ["/data", "/models"]
ENTRYPOINT ["ilid-async"]
CMD ["--help"]
