# ompq: multi-stage image on Debian 12, running as a non-root user.
#
#   docker build -t ompq .                                  # CPU: Debian's LibTorch 1.13
#   docker build -t ompq:cuda --build-arg TORCH=cuda .      # CUDA: PyTorch's LibTorch zip
#   docker run --rm -p 50051:50051 -p 9464:9464 -v ompq-data:/data ompq
#   docker run --rm --gpus all ompq:cuda ompq-worker --server HOST:50051 --device cuda
#
# The stages named by TORCH are picked with BuildKit (Docker's default builder), which
# skips the stages the final image does not need. Podman/Buildah 1.28 pick stages before
# applying ARG defaults: pass --build-arg TORCH=debian there.
# TORCH=debian|cuda selects the LibTorch the binaries are built against and run with.
ARG TORCH=debian

# ---- build: the -dev packages (scripts/install-deps.sh) and the compiler ----
FROM debian:12 AS build-base
WORKDIR /src
COPY scripts/install-deps.sh scripts/
# install-deps.sh installs what is missing; as root it needs no sudo.
RUN bash scripts/install-deps.sh curl unzip && rm -rf /var/lib/apt/lists/*

# Debian's libtorch-dev (installed above) is what CMake finds by default.
FROM build-base AS torch-debian

# A CUDA LibTorch from pytorch.org, unpacked to /opt/libtorch. Its CMake config needs the
# CUDA toolkit (nvcc and the -dev libraries) from NVIDIA's Debian 12 repository. Keep
# LIBTORCH_URL's CUDA version and CUDA_PACKAGES in step; use a cxx11-ABI build (Debian's
# libraries use that ABI).
FROM build-base AS torch-cuda
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.4.1%2Bcu124.zip
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64
ARG CUDA_PACKAGES="cuda-minimal-build-12-4 cuda-libraries-dev-12-4 cuda-nvtx-12-4"
RUN curl -fsSL "$CUDA_REPO/cuda-keyring_1.1-1_all.deb" -o /tmp/cuda-keyring.deb \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update -q \
    && apt-get install -y -q --no-install-recommends $CUDA_PACKAGES \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL "$LIBTORCH_URL" -o /tmp/libtorch.zip \
    && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip \
    && test -f /opt/libtorch/share/cmake/Torch/TorchConfig.cmake
# CMake reads both from the environment: find_package(Torch) then prefers /opt/libtorch
# over Debian's copy in /usr.
ENV CMAKE_PREFIX_PATH=/opt/libtorch \
    Torch_DIR=/opt/libtorch/share/cmake/Torch \
    CUDA_HOME=/usr/local/cuda \
    PATH=/usr/local/cuda/bin:$PATH

FROM torch-${TORCH} AS build
COPY . .
RUN rm -rf build && bash scripts/build.sh --target ompq-server ompq-worker ompqctl

# ---- runtime: shared libraries only ----
# The packages of every library the three binaries link directly (readelf -d NEEDED, mapped
# with dpkg -S); apt brings in what those libraries need in turn.
FROM debian:12 AS runtime-base
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      libabsl20220623 libgrpc++1.51 libgrpc29 libre2-9 libprotobuf32 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsqlite3-0 libpqxx-6.4 libssl3 \
      coinor-libclp1 coinor-libcoinutils3v5 libzip4 libonnx1 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ompq \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home ompq \
    && mkdir -p /data && chown 10001:10001 /data

# Debian's LibTorch; the Gram matrices use OpenBLAS (the worker tunes its threads).
FROM runtime-base AS runtime-debian
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      libtorch1.13 libopenblas0-pthread \
    && rm -rf /var/lib/apt/lists/*

# PyTorch's LibTorch brings its CUDA runtime, cuBLAS and cuDNN; the driver (libcuda) comes
# from the host through the NVIDIA container toolkit. The binaries' RUNPATH names
# /opt/libtorch/lib, so it stays at the same path.
FROM runtime-base AS runtime-cuda
COPY --from=torch-cuda /opt/libtorch/lib /opt/libtorch/lib
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${TORCH} AS runtime
COPY --from=build /src/build/bin/ompq-server /src/build/bin/ompq-worker /src/build/bin/ompqctl /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /data
# gRPC; server metrics; worker metrics (ompq-worker --metrics-listen).
EXPOSE 50051 9464 9465
# No HEALTHCHECK: there is no gRPC health client in the image (Debian 12 packages none);
# Kubernetes probes the server itself (deploy/k8s/server.yaml).
# Without TLS files the server refuses a non-loopback plaintext address unless --insecure:
# this default is for a local try-out; deploy/k8s passes --tls-cert/--tls-key instead.
CMD ["ompq-server", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464", \
     "--data-dir", "/data", "--insecure"]
