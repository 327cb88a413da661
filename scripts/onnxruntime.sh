#!/usr/bin/env bash
# Installs ONNX Runtime for Node.js (onnxruntime-node, CPU library inside the package) into
# build/onnxruntime, the runtime the tests run model_quantized.onnx in. Idempotent: quiet
# when that version is there. Prints the node_modules folder (OMPQ_ONNXRUNTIME_NODE).
#   ONNXRUNTIME_NODE_INSTALL=skip: the package's postinstall would fetch GPU libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.30.0
DIR=${OMPQ_ONNXRUNTIME_DIR:-$PWD/build/onnxruntime}
PACKAGE="$DIR/node_modules/onnxruntime-node/package.json"
if ! command -v npm >/dev/null 2>&1; then
  bash scripts/install-deps.sh nodejs npm
fi
if ! [ -f "$PACKAGE" ] || ! grep -q "\"version\": \"$VERSION\"" "$PACKAGE"; then
  echo "ompq: installing onnxruntime-node@$VERSION into $DIR" >&2
  mkdir -p "$DIR"
  (cd "$DIR" && [ -f package.json ] || echo '{"private": true}' >"$DIR/package.json")
  (cd "$DIR" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error \
     "onnxruntime-node@$VERSION" >&2)
fi
echo "$DIR/node_modules"
