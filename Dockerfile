# ompq: multi-stage image on Debian 12. CPU LibTorch by default (Debian's libtorch-dev).
# Build:  docker build -t ompq .
# Run:    docker run -p 50051:50051 -v ompq-data:/data ompq \
#           ompq-server --listen 0.0.0.0:50051 --data-dir /data
FROM debian:12 AS build
RUN apt-get update -q && apt-get install -y -q --no-install-recommends sudo && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN rm -rf build && bash scripts/build.sh ompq-server ompq-worker ompqctl

FROM debian:12 AS runtime
# Runtime libraries only (the -dev packages pull them in at build time).
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libtorch1.13 libopenblas0 coinor-libclp1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libsqlite3-0 libpqxx-6.4 \
      libzip4 libssl3 libabsl20220623 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /data ompq && mkdir -p /data && chown ompq /data
COPY --from=build /src/build/bin/ompq-server /src/build/bin/ompq-worker /src/build/bin/ompqctl /usr/local/bin/
USER ompq
WORKDIR /data
EXPOSE 50051 9464
ENTRYPOINT []
CMD ["ompq-server", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464", "--data-dir", "/data"]
