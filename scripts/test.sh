#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh python3-scipy
bash scripts/build.sh

# LibTorch tests share 2 cores here; run tests two at a time, each bounded in time.
ctest --test-dir build --output-on-failure -j 2 --timeout 900
