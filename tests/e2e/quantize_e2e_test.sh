#!/usr/bin/env bash
# End-to-end test of the embedded default: a real ompq-server (which supervises its own
# ompq-worker) on a free loopback port, driven by ompqctl the way users and CI do:
# quantize with progress, download and summary (PTQ and QAT); submit/wait/download in
# JSON; bad inputs with their exit codes and reasons; and a SIGTERM drain that exits 0.
# Then a server with no local workers, where jobs stay queued until a remote ompq-worker
# connects: wait --timeout (exit 3), Ctrl-C while watching (exit 130), cancel, the remote
# worker.
#
# Usage: quantize_e2e_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"

# --- Inputs ----------------------------------------------------------------------------
make_inputs

# --- No server yet: unreachable is exit 4 with advice -----------------------------------
run_ctl 4 unreachable --server 127.0.0.1:1 get jobs/x
grep -q -- "--server" "$WORK/unreachable.err" || fail "unreachable: no advice in stderr"
pass "unreachable server: exit 4"

# --- Server ------------------------------------------------------------------------------
start_server main

cd "$WORK/in"

# --- The user's path: quantize ------------------------------------------------------------
# PTQ (the default) with eval data labelled by the float model itself (top-1 exactly 1).
run_ctl 0 quantize quantize model.pt --calib calib.pt --size "$BUDGET" --eval eval.pt \
  --iters 200 --out "$WORK/out"
"$PY" "$HERE/check_artifacts.py" "$WORK/out" "$BUDGET" || fail "quantize: bad artifacts"
[[ $(json_get "$WORK/out/report.json" 'd["accuracy"]["fp32"]') == 1.0 ]] ||
  fail "quantize: FP32 top-1 on labels the float model made is not 1"
[[ $(json_get "$WORK/out/report.json" 'd["quantization"]["finetune"]') == ptq ]] ||
  fail "quantize: the default finetune is not ptq"
"$PY" "$HERE/../engine/check_quantized_model.py" "$WORK/out" eval.pt >"$WORK/pycheck.out" 2>&1 ||
  { cat "$WORK/pycheck.out" >&2; fail "quantize: model_quantized.pt disagrees with the report"; }
for text in "conv2" "Size:" "BOPs:" "Objective:" "Accuracy:" "$WORK/out"; do
  grep -qF -- "$text" "$WORK/quantize.out" || fail "quantize: summary lacks '$text'"
done
# Not a terminal: progress comes as plain lines, one per state/stage change.
grep -q "^\[RUNNING\]" "$WORK/quantize.err" || fail "quantize: no progress lines on stderr"
if grep -q $'\r' "$WORK/quantize.err"; then fail "quantize: carriage returns off a TTY"; fi
pass "quantize: exit 0, artifacts and summary"

# The size-quality frontier: 24 budgets, 8 of them measured with --eval by default;
# ompqctl frontier prints it with the job's own allocation among the points.
[[ $(json_get "$WORK/out/report.json" 'len(d["frontier"])') -ge 20 ]] ||
  fail "frontier: fewer than 20 points"
[[ $(json_get "$WORK/out/report.json" 'sum("top1_nearest" in p for p in d["frontier"])') == 8 ]] ||
  fail "frontier: not 8 measured points"
[[ $(json_get "$WORK/out/report.json" \
   'all(0 <= p["top1_nearest"] <= 1 for p in d["frontier"] if "top1_nearest" in p)') == True ]] ||
  fail "frontier: a top-1 outside [0, 1]"
run_ctl 0 list_first list --output json
FIRST=$(json_get "$WORK/list_first.out" 'd["jobs"][0]["name"]')
run_ctl 0 frontier frontier "$FIRST"
grep -q "<- this job" "$WORK/frontier.out" || fail "frontier: the job is not marked"
[[ $(grep -c "%" "$WORK/frontier.out") -ge 8 ]] || fail "frontier: measured top-1 not printed"
run_ctl 0 frontier_json frontier "$FIRST" --output json
[[ $(json_get "$WORK/frontier_json.out" 'len(d["frontier"])') -ge 20 ]] ||
  fail "frontier --output json: no points"
grep -q "Size against quality" "$WORK/out/report.html" || fail "frontier: not in report.html"
pass "frontier: 24 points, 8 measured, ompqctl frontier, report.html"

# The distortion objective, and the refusals at submit.
run_ctl 0 distortion quantize model.pt --calib calib.pt --size "$BUDGET" --objective distortion \
  --finetune none --out "$WORK/distortion"
[[ $(json_get "$WORK/distortion/report.json" 'd["search"]["objective"]') == distortion ]] ||
  fail "distortion: search.objective"
[[ $(json_get "$WORK/distortion/report.json" 'all("distortion" in l for l in d["layers"])') == \
   True ]] || fail "distortion: layers lack their distortion tables"
[[ $(json_get "$WORK/distortion/report.json" 'd["result"]["size_bytes"] <= '"$BUDGET") == True ]] ||
  fail "distortion: over budget"
run_ctl 2 bad_objective quantize model.pt --calib calib.pt --size "$BUDGET" --objective best \
  --out "$WORK/bad"
grep -q "use orthogonality or distortion" "$WORK/bad_objective.err" ||
  fail "bad objective: the allowed values are not named"
run_ctl 2 frontier_no_eval quantize model.pt --calib calib.pt --size "$BUDGET" \
  --frontier-evals 3 --out "$WORK/bad"
grep -q -- "--frontier-evals measures top-1 on the eval data" "$WORK/frontier_no_eval.err" ||
  fail "frontier-evals without eval: no reason"
pass "quantize --objective distortion; bad --objective and --frontier-evals refused (exit 2)"

# The TensorRT profile: symmetric grids end to end, and ONNX Runtime gives the report's top-1.
run_ctl 0 tensorrt quantize model.pt --calib calib.pt --size "$BUDGET" --eval eval.pt \
  --export-profile tensorrt --finetune none --frontier-evals 0 --out "$WORK/tensorrt"
[[ $(json_get "$WORK/tensorrt/report.json" 'd["quantization"]["export_profile"]') == tensorrt ]] ||
  fail "tensorrt: quantization.export_profile"
[[ $(json_get "$WORK/tensorrt/report.json" 'd["export"]["onnx"]["profile"]') == tensorrt ]] ||
  fail "tensorrt: export.onnx.profile"
[[ $(json_get "$WORK/tensorrt/encodings.json" \
   'all(e[0]["is_symmetric"] == "True" for e in d["activation_encodings"].values())') == True ]] ||
  fail "tensorrt: activation encodings are not symmetric"
"$PY" "$HERE/../engine/check_quantized_model.py" "$WORK/tensorrt" eval.pt \
  >"$WORK/pycheck_tensorrt.out" 2>&1 ||
  { cat "$WORK/pycheck_tensorrt.out" >&2; fail "tensorrt: the exported models disagree with the report"; }
run_ctl 2 bad_profile quantize model.pt --calib calib.pt --size "$BUDGET" --export-profile fast \
  --out "$WORK/bad"
grep -q "use default or tensorrt" "$WORK/bad_profile.err" || fail "bad profile: no reason"
pass "quantize --export-profile tensorrt: symmetric encodings, ONNX Runtime agrees; bad profile refused"

# QAT: trains on labelled data (the eval file, labelled by the float model) with the
# step sizes learned; the same artifacts, the report says what training did.
run_ctl 0 quantize_qat quantize model.pt --calib calib.pt --size "$BUDGET" --eval eval.pt \
  --finetune qat --train eval.pt --epochs 1 --lr 0.001 --out "$WORK/qat"
"$PY" "$HERE/check_artifacts.py" "$WORK/qat" "$BUDGET" || fail "qat: bad artifacts"
[[ $(json_get "$WORK/qat/report.json" 'd["quantization"]["finetune"]') == qat ]] ||
  fail "qat: report.json quantization.finetune is not qat"
[[ $(json_get "$WORK/qat/report.json" 'd["quantization"]["qat"]["epochs"]') == 1 ]] ||
  fail "qat: report.json quantization.qat.epochs is not 1"
[[ $(json_get "$WORK/qat/report.json" 'd["quantization"]["qat"]["steps"] >= 1') == True ]] ||
  fail "qat: no training steps reported"
"$PY" "$HERE/../engine/check_quantized_model.py" "$WORK/qat" eval.pt >"$WORK/pycheck_qat.out" 2>&1 ||
  { cat "$WORK/pycheck_qat.out" >&2; fail "qat: model_quantized.pt disagrees with the report"; }
grep -q "FINETUNING" "$WORK/quantize_qat.err" || fail "qat: no FINETUNING progress"
pass "quantize --finetune qat: exit 0, artifacts, report"

# QAT without --train is refused at submit (exit 2) with the reason.
run_ctl 2 qat_no_train quantize model.pt --calib calib.pt --size "$BUDGET" --finetune qat \
  --out "$WORK/bad"
grep -q -- "pass --train FILE" "$WORK/qat_no_train.err" || fail "qat without --train: no reason"
pass "quantize --finetune qat without --train: exit 2 with the reason"

# Training labels outside the model's 10 classes: the worker refuses them before the
# search starts (the job fails in ANALYZING, where the inputs are checked).
"$PY" -c 'import torch; d = torch.load("eval.pt"); d["labels"] = d["labels"] + 10
torch.save(d, "train_bad_labels.pt")'
run_ctl 1 qat_bad_labels quantize model.pt --calib calib.pt --size "$BUDGET" --finetune qat \
  --train train_bad_labels.pt --out "$WORK/bad" --output json
[[ $(json_get "$WORK/qat_bad_labels.out" 'd["error"]["reason"]') == INVALID_INPUT ]] ||
  fail "qat bad labels: reason is not INVALID_INPUT"
json_get "$WORK/qat_bad_labels.out" 'd["error"]["message"]' | grep -q "train labels range over" ||
  fail "qat bad labels: the message does not give the label range"
[[ $(json_get "$WORK/qat_bad_labels.out" 'd["stage"]') == ANALYZING ]] ||
  fail "qat bad labels: refused in stage $(json_get "$WORK/qat_bad_labels.out" 'd["stage"]')"
pass "quantize --finetune qat with labels out of range: FAILED INVALID_INPUT before the search"

run_ctl 0 upload upload model.pt
grep -q "already on the server" "$WORK/upload.out" || fail "upload: model was sent again"
pass "upload skips blobs the server has"

# --- The CI path: submit / wait / download in JSON ----------------------------------------
run_ctl 0 submit submit model.pt --calib calib.pt --size "$BUDGET" --label ci=yes \
  --output json
NAME=$(json_get "$WORK/submit.out" 'd["name"]')
[[ "$NAME" == jobs/* ]] || fail "submit: name '$NAME'"
for field in name state stage progress attempt; do
  json_get "$WORK/submit.out" "d['$field']" >/dev/null || fail "submit: JSON lacks $field"
done
run_ctl 0 wait wait "$NAME" --timeout 5m --output json
[[ $(json_get "$WORK/wait.out" 'd["state"]') == SUCCEEDED ]] || fail "wait: not SUCCEEDED"
[[ $(json_get "$WORK/wait.out" 'int(d["result"]["sizeBytes"]) <= '"$BUDGET") == True ]] ||
  fail "wait: result over budget"
[[ $(json_get "$WORK/wait.out" 'sorted(a["name"] for a in d["artifacts"])') == \
   "['bit_config.json', 'encodings.json', 'model_quantized.onnx', 'model_quantized.pt', 'report.html', 'report.json']" ]] ||
  fail "wait: artifacts"
run_ctl 0 download download "$NAME" --out "$WORK/ci"
"$PY" "$HERE/check_artifacts.py" "$WORK/ci" "$BUDGET" "$NAME" || fail "download: bad artifacts"
[[ $(json_get "$WORK/ci/report.json" '"accuracy" in d') == False ]] ||
  fail "download: accuracy in a report without --eval"
run_ctl 0 get get "$NAME" --output json
[[ $(json_get "$WORK/get.out" 'd["attempt"]') -ge 1 ]] || fail "get: attempt"
run_ctl 0 list list --label ci=yes --output json
[[ $(json_get "$WORK/list.out" '[j["name"] for j in d["jobs"]]') == "['$NAME']" ]] ||
  fail "list: expected only $NAME"
pass "CI path: submit, wait, download, get, list"

# Cancel while running: the worker hears it at its next heartbeat and stops the search.
run_ctl 0 long submit model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 \
  --output json
LONG=$(json_get "$WORK/long.out" 'd["name"]')
for _ in $(seq 300); do
  run_ctl 0 long_get get "$LONG" --output json
  [[ $(json_get "$WORK/long_get.out" 'd["state"]') == QUEUED ]] || break
  sleep 0.1
done
cancel_rc=0
timeout 60 "$BIN/ompqctl" cancel "$LONG" >"$WORK/long_cancel.out" 2>&1 || cancel_rc=$?
if [[ $cancel_rc -eq 0 ]]; then
  run_ctl 1 long_wait wait "$LONG" --timeout 2m --output json
  [[ $(json_get "$WORK/long_wait.out" 'd["error"]["reason"]') == CANCELLED ]] ||
    fail "cancel of a running job: reason is not CANCELLED"
  pass "cancel of a running job: CANCELLED, wait exits 1"
else
  # A very fast machine may finish the search before the cancel arrives.
  run_ctl 0 long_wait wait "$LONG" --timeout 2m --output json
  echo "skip: the long job finished before it could be cancelled"
fi

# --- Bad inputs ---------------------------------------------------------------------------
run_ctl 1 not_torchscript quantize state_dict.pt --calib calib.pt --size "$BUDGET" \
  --out "$WORK/bad" --output json
[[ $(json_get "$WORK/not_torchscript.out" 'd["state"]') == FAILED ]] || fail "state_dict: state"
[[ $(json_get "$WORK/not_torchscript.out" 'd["error"]["reason"]') == INVALID_MODEL ]] ||
  fail "state_dict: reason is not INVALID_MODEL"
pass "not TorchScript: FAILED INVALID_MODEL, exit 1"

run_ctl 1 infeasible quantize model.pt --calib calib.pt --size 100 --out "$WORK/bad" \
  --output json
[[ $(json_get "$WORK/infeasible.out" 'd["error"]["reason"]') == INFEASIBLE_BUDGET ]] ||
  fail "infeasible: reason is not INFEASIBLE_BUDGET"
pass "infeasible budget: FAILED INFEASIBLE_BUDGET, exit 1"

run_ctl 2 missing_file quantize nowhere.pt --calib calib.pt --size "$BUDGET"
grep -q "nowhere.pt" "$WORK/missing_file.err" || fail "missing file: not named"
run_ctl 2 not_found get jobs/nope
run_ctl 2 bad_usage quantize model.pt --calib calib.pt
pass "missing file, unknown job, no budget: exit 2"

# --- Drain ----------------------------------------------------------------------------------
stop_server
pass "SIGTERM: server drained and exited 0"

# --- Remote worker: a server with no local workers, so jobs wait until one connects ------
start_server remote --workers 0
run_ctl 0 queued submit model.pt --calib calib.pt --size "$BUDGET" --output json
QUEUED=$(json_get "$WORK/queued.out" 'd["name"]')
run_ctl 3 wait_timeout wait "$QUEUED" --timeout 1s --output json
[[ $(json_get "$WORK/wait_timeout.out" 'd["state"]') == QUEUED ]] || fail "wait timeout: state"
grep -q "wait again with" "$WORK/wait_timeout.err" || fail "wait timeout: no advice"
pass "wait --timeout on a queued job: exit 3"

# Ctrl-C while watching leaves the job alone and says how to reattach.
timeout 60 "$BIN/ompqctl" watch "$QUEUED" >"$WORK/watch.out" 2>"$WORK/watch.err" &
WATCH_PID=$!
for _ in $(seq 100); do grep -q "^\[QUEUED\]" "$WORK/watch.err" && break; sleep 0.1; done
kill -INT "$WATCH_PID"
rc=0
wait "$WATCH_PID" || rc=$?
[[ $rc -eq 130 ]] || fail "watch: Ctrl-C exited $rc, expected 130"
grep -q "keeps running; reattach with: ompqctl watch $QUEUED" "$WORK/watch.err" ||
  fail "watch: no reattach advice"
pass "Ctrl-C while watching: exit 130 with reattach advice"

run_ctl 0 cancel_submit submit model.pt --calib calib.pt --size "$BUDGET" --seed 2 \
  --output json
DOOMED=$(json_get "$WORK/cancel_submit.out" 'd["name"]')
run_ctl 0 cancel cancel "$DOOMED"
run_ctl 1 cancelled wait "$DOOMED" --timeout 30s --output json
[[ $(json_get "$WORK/cancelled.out" 'd["state"]') == CANCELLED ]] || fail "cancel: state"
pass "cancel of a queued job: wait exits 1 with CANCELLED"

start_worker remote-1
WORKER_PID=$LAST_PID
run_ctl 0 remote_wait wait "$QUEUED" --timeout 5m --output json
[[ $(json_get "$WORK/remote_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "remote: state"
run_ctl 0 remote_download download "$QUEUED" --out "$WORK/remote"
"$PY" "$HERE/check_artifacts.py" "$WORK/remote" "$BUDGET" "$QUEUED" ||
  fail "remote: bad artifacts"
kill -TERM "$WORKER_PID"
rc=0
wait_for_exit "$WORKER_PID" || rc=$?
[[ $rc -eq 0 ]] || fail "ompq-worker exited $rc after SIGTERM"
[[ -z "$(ls -A "$WORK/remote-1/jobs" 2>/dev/null)" ]] || fail "worker left job files behind"
pass "remote ompq-worker ran the queued job and stopped cleanly on SIGTERM"
stop_server
echo "PASS"
