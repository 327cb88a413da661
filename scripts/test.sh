#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang + libclang-rt-14-dev (the libFuzzer runtime): scripts/fuzz.sh.
bash scripts/install-deps.sh python3-scipy clang libclang-rt-14-dev
# Deployment checks (tests/deploy): python3-yaml, and promtool from Debian's prometheus.
bash scripts/install-deps.sh python3-yaml prometheus
bash scripts/build.sh
# ONNX Runtime for Node.js, which the artifact checks run model_quantized.onnx in.
bash scripts/onnxruntime.sh >/dev/null

# The PostgreSQL job store tests run against a real, throwaway PostgreSQL (Debian's
# package), stopped on exit. OMPQ_TEST_POSTGRES=off skips them; a given
# OMPQ_TEST_POSTGRES_URL is used as is.
if [ "${OMPQ_TEST_POSTGRES:-}" != off ] && [ -z "${OMPQ_TEST_POSTGRES_URL:-}" ]; then
  PG_DIR=$(mktemp -d /tmp/ompq-pg.XXXXXX)
  trap 'bash scripts/pg-test-server.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
  OMPQ_TEST_POSTGRES_URL=$(bash scripts/pg-test-server.sh start "$PG_DIR")
  export OMPQ_TEST_POSTGRES_URL
fi

# LibTorch tests share 2 cores here; run tests two at a time, each bounded in time.
ctest --test-dir build --output-on-failure -j 2 --timeout 900

# libFuzzer targets of every parser of user bytes, each run briefly (build-fuzz, clang).
bash scripts/fuzz.sh
