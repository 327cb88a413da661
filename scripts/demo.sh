#!/usr/bin/env bash
# The ompq demo: install what is missing, build, train (or reuse) a small CNN on
# Fashion-MNIST, start the embedded server, quantize the model end to end with ompqctl
# (FP32 against quantized top-1 on held-out images), print the result and the size-quality
# frontier, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/install-deps.sh
bash scripts/build.sh

MODEL_DIR=${OMPQ_DEMO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ompq/demo-fashion-mnist}
echo "== model: small CNN on Fashion-MNIST (cached in $MODEL_DIR)"
/usr/bin/python3 scripts/fashion_mnist.py "$MODEL_DIR"

WORK=$(mktemp -d -t ompq-demo.XXXXXX)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting ompq-server (embedded default, state in $WORK/data)"
"$ROOT/build/bin/ompq-server" --listen 127.0.0.1:0 --port-file "$WORK/port" \
  --metrics-listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  [ -s "$WORK/port" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.1
done
[ -s "$WORK/port" ] || { echo "server did not start; log:"; cat "$WORK/server.log"; exit 1; }
export OMPQ_SERVER="127.0.0.1:$(cat "$WORK/port")"

OUT=${OMPQ_DEMO_OUT:-$ROOT/results/demo}
echo "== ompqctl quantize model.pt --calib calib.pt --eval eval.pt --size 192KiB --out $OUT"
"$ROOT/build/bin/ompqctl" quantize "$MODEL_DIR/model.pt" --calib "$MODEL_DIR/calib.pt" \
  --eval "$MODEL_DIR/eval.pt" --size 192KiB --out "$OUT"

# What mixed precision buys: the best allocation at each size, some measured.
JOB=$("$ROOT/build/bin/ompqctl" list --limit 1 --output json |
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["jobs"][0]["name"])')
echo "== ompqctl frontier $JOB"
"$ROOT/build/bin/ompqctl" frontier "$JOB"

# The exported models outside the service: model_quantized.pt in PyTorch and
# model_quantized.onnx in ONNX Runtime (onnxruntime-node), each against the report's top-1.
echo "== model_quantized.pt in PyTorch, model_quantized.onnx in ONNX Runtime"
OMPQ_ONNXRUNTIME_NODE=$(bash "$ROOT/scripts/onnxruntime.sh")
export OMPQ_ONNXRUNTIME_NODE
/usr/bin/python3 "$ROOT/tests/engine/check_quantized_model.py" "$OUT" "$MODEL_DIR/eval.pt"

echo "== stopping the server (SIGTERM drains and exits 0)"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=""
echo "== done: artifacts in $OUT (open $OUT/report.html in a browser)"
