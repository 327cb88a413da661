#!/usr/bin/env bash
# End-to-end bad input (issue 5, item 5), through real ompq-server/ompq-worker processes
# and ompqctl; each case checks its code, reason and exit status:
#  jobs that fail in the worker, FAILED on attempt 1 (never retried), ompqctl exit 1:
#   - a model calling a denied op (torch.save in its code)   -> UNSUPPORTED_OP
#   - a model without Conv/Linear layers                      -> NO_QUANTIZABLE_LAYERS
#   - calibration data of the wrong shape for the model       -> INPUT_MISMATCH
#   - calibration data holding a NaN                          -> NON_FINITE_INPUT
#  requests the server refuses, ompqctl exit 2:
#   - an upload larger than --max-blob-bytes                  -> RESOURCE_EXHAUSTED
#   - a submit while --max-queued-jobs jobs are queued        -> RESOURCE_EXHAUSTED
#   - a negative page size (list --limit -1)                  -> refused by ompqctl
#   - get/cancel/wait of an unknown job                       -> NOT_FOUND
# Covered elsewhere, not repeated: not TorchScript (INVALID_MODEL) and an infeasible budget
# (INFEASIBLE_BUDGET) in quantize_e2e_test.sh; an upload whose bytes do not match its digest
# (INVALID_ARGUMENT, nothing stored) and ListJobs with page_size -1 (INVALID_ARGUMENT) in
# tests/server/server_test.cc, with a real server and stub: ompqctl computes digests
# itself and checks --limit, so it cannot send either.
#
# Usage: bad_input_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

# Bad models and calibration data, made by real PyTorch (from a file: torch.jit.script
# reads the module's source).
cat >"$WORK/make_bad.py" <<'PYEOF'
import os, sys
import torch
import torch.nn as nn

out = sys.argv[1]
torch.manual_seed(0)


class SavesFile(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        torch.save(y, "/tmp/ompq-e2e-should-not-exist")
        return y


class NoLayers(nn.Module):
    def forward(self, x):
        return torch.relu(nn.functional.avg_pool2d(x, 2))


torch.jit.script(SavesFile()).save(os.path.join(out, "saves_file.pt"))
torch.jit.trace(NoLayers().eval(), torch.randn(2, 3, 16, 16)).save(
    os.path.join(out, "no_layers.pt"))
torch.save(torch.randn(32, 3, 16, 16)[:, :1].contiguous(), os.path.join(out, "one_channel.pt"))
with_nan = torch.randn(32, 3, 16, 16)
with_nan[5, 1, 2, 3] = float("nan")
torch.save(with_nan, os.path.join(out, "calib_nan.pt"))
PYEOF
timeout 300 "$PY" "$WORK/make_bad.py" "$WORK/in"

start_server main --workers 1 --max-blob-bytes 10MiB

# fails_with NAME REASON MODEL CALIB: quantize must end FAILED with REASON on attempt 1.
fails_with() {
  local name=$1 reason=$2 model=$3 calib=$4
  run_ctl 1 "$name" quantize "$model" --calib "$calib" --size "$BUDGET" --out "$WORK/$name" \
    --output json
  local out="$WORK/$name.out"
  [[ $(json_get "$out" 'd["state"]') == FAILED ]] || fail "$name: state $(json_get "$out" 'd["state"]')"
  [[ $(json_get "$out" 'd["error"]["reason"]') == "$reason" ]] ||
    fail "$name: error $(json_get "$out" 'd["error"]'), expected reason $reason"
  [[ $(json_get "$out" 'd["error"]["code"]') == INVALID_ARGUMENT ]] ||
    fail "$name: code $(json_get "$out" 'd["error"]["code"]')"
  [[ $(json_get "$out" 'd["attempt"]') == 1 ]] || fail "$name: retried (bad input is final)"
  [[ -n $(json_get "$out" 'd["error"]["message"]') ]] || fail "$name: no message"
  pass "$name: FAILED $reason on attempt 1: $(json_get "$out" 'd["error"]["message"]' | cut -c1-100)"
}

fails_with unsupported_op UNSUPPORTED_OP saves_file.pt calib.pt
json_get "$WORK/unsupported_op.out" 'd["error"]["message"]' | grep -q "save" ||
  fail "unsupported_op: the message does not name the op"
[[ ! -e /tmp/ompq-e2e-should-not-exist ]] || fail "unsupported_op: the model's torch.save ran"
fails_with no_layers NO_QUANTIZABLE_LAYERS no_layers.pt calib.pt
fails_with input_mismatch INPUT_MISMATCH model.pt one_channel.pt
fails_with non_finite NON_FINITE_INPUT model.pt calib_nan.pt

# The worker survived all of that: an ordinary job still succeeds.
run_ctl 0 good quantize model.pt --calib calib.pt --size "$BUDGET" --out "$WORK/good" --output json
[[ $(json_get "$WORK/good.out" 'd["state"]') == SUCCEEDED ]] || fail "good job after bad ones"
pass "an ordinary job still SUCCEEDED after the bad ones"

# --- refused by the server ----------------------------------------------------------------------
run_ctl 2 oversized submit model.pt --calib big_calib.pt --size "$BUDGET"
grep -q -- "--max-blob-bytes" "$WORK/oversized.err" ||
  fail "oversized upload: $(cat "$WORK/oversized.err")"
grep -qi "limit" "$WORK/oversized.err" || fail "oversized upload: no limit named"
pass "upload over --max-blob-bytes: RESOURCE_EXHAUSTED, exit 2"

# ompqctl refuses a negative page size before sending it; the server's own refusal of
# ListJobs page_size -1 (INVALID_ARGUMENT) is in tests/server/server_test.cc.
run_ctl 2 negative_page list --limit -1
grep -q -- "--limit must be positive" "$WORK/negative_page.err" ||
  fail "negative page size: $(cat "$WORK/negative_page.err")"
pass "negative page size (list --limit -1): refused, exit 2"

for command in get cancel wait; do
  run_ctl 2 "unknown_$command" "$command" jobs/no-such-job
  grep -q "not found" "$WORK/unknown_$command.err" ||
    fail "unknown job ($command): $(cat "$WORK/unknown_$command.err")"
done
pass "unknown job: get/cancel/wait -> NOT_FOUND, exit 2"
stop_server

# A full queue: no workers, room for one queued job.
start_server queue --workers 0 --max-queued-jobs 1
submit queued model.pt --calib calib.pt --size "$BUDGET"
run_ctl 2 queue_full submit model.pt --calib calib.pt --size "$BUDGET" --seed 2
grep -q "queue is full" "$WORK/queue_full.err" || fail "queue full: $(cat "$WORK/queue_full.err")"
run_ctl 0 queue_list list --output json
[[ $(json_get "$WORK/queue_list.out" 'len(d["jobs"])') == 1 ]] || fail "queue full: a job was added"
pass "submit past --max-queued-jobs: RESOURCE_EXHAUSTED, exit 2, nothing queued"
stop_server
echo "PASS"
