# Shared helpers of the end-to-end fault tests (sourced, not run). Each test is a real
# process tree on loopback: ompq-server, ompq-worker processes the test starts and stops
# itself, and ompqctl. Every wait is bounded (a safety limit, never a timing assertion);
# the EXIT trap stops every process the test started and removes its files.
#
# Usage, at the top of a test:
#   source "$(dirname "$0")/lib.sh"
#   e2e_init "$@"            # BIN_DIR as $1; sets BIN, HERE, PY, WORK and the trap
set -euo pipefail

PY=/usr/bin/python3  # Debian's python3 with python3-torch, not whatever is first on PATH.
SERVER_PID=""
WORKER_PIDS=()  # Every ompq-worker the test started (stopped ones are resumed to die).
LAST_PID=""

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

e2e_init() {
  BIN=$(cd "${1:?usage: $(basename "$0") BIN_DIR}" && pwd)
  HERE=$(cd "$(dirname "$0")" && pwd)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/ompq-e2e-$(basename "$0" .sh).XXXXXX")
  trap e2e_cleanup EXIT
  for binary in ompq-server ompq-worker ompqctl; do
    [[ -x "$BIN/$binary" ]] || fail "$BIN/$binary is not built"
  done
}

e2e_cleanup() {
  local rc=$?
  local pid
  for pid in "${WORKER_PIDS[@]}"; do
    kill -CONT "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 ]]; then
    local log
    for log in "$WORK"/*.log; do
      [[ -f "$log" ]] || continue
      echo "--- last lines of $(basename "$log"):" >&2
      tail -n 30 "$log" >&2
    done
  fi
  rm -rf "$WORK"
}

# run_ctl EXPECTED_EXIT NAME ARGS...: runs ompqctl (bounded in time) with stdout in
# $WORK/NAME.out and stderr in $WORK/NAME.err, and checks its exit code.
run_ctl() {
  local expected=$1 name=$2
  shift 2
  local rc=0
  timeout 300 "$BIN/ompqctl" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
  if [[ $rc -ne $expected ]]; then
    echo "--- stdout:" >&2; cat "$WORK/$name.out" >&2
    echo "--- stderr:" >&2; cat "$WORK/$name.err" >&2
    fail "$name: ompqctl $* exited $rc, expected $expected"
  fi
}

# json_get FILE EXPR: evaluates a Python expression over the JSON document `d` in FILE;
# fails when FILE is not exactly one JSON document.
json_get() {
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# make_inputs: the e2e model and calibration files in $WORK/in (see make_model.py), and
# BUDGET, a size budget between uniform 2 and 8 bits.
make_inputs() {
  timeout 300 "$PY" "$HERE/make_model.py" "$WORK/in" >"$WORK/sizes.json"
  local size2 size8
  size2=$(json_get "$WORK/sizes.json" 'd["size_2bit"]')
  size8=$(json_get "$WORK/sizes.json" 'd["size_8bit"]')
  BUDGET=$(( (size2 + size8) / 2 ))
  pass "inputs made; budget $BUDGET bytes"
}

# start_server NAME [FLAGS...]: starts ompq-server with its state in $WORK/NAME (kept
# across restarts of the same NAME), its log in $WORK/NAME.log, listening on $LISTEN
# (default 127.0.0.1:0, a free port); waits for the port file and exports OMPQ_SERVER
# and PORT.
start_server() {
  local name=$1
  shift
  rm -f "$WORK/$name.port"
  "$BIN/ompq-server" --listen "${LISTEN:-127.0.0.1:0}" --port-file "$WORK/$name.port" \
    --data-dir "$WORK/$name" --metrics-listen 127.0.0.1:0 "$@" >>"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 300); do
    [[ -s "$WORK/$name.port" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "ompq-server '$name' exited at start"
    sleep 0.1
  done
  [[ -s "$WORK/$name.port" ]] || fail "ompq-server '$name' wrote no port file within 30 s"
  PORT=$(tr -d '[:space:]' <"$WORK/$name.port")
  export OMPQ_SERVER="127.0.0.1:$PORT"
  pass "server '$name' up at $OMPQ_SERVER (pid $SERVER_PID)"
}

# stop_server: SIGTERM; the server must drain and exit 0 within 30 s.
stop_server() {
  kill -TERM "$SERVER_PID"
  local rc=0
  wait_for_exit "$SERVER_PID" || rc=$?
  SERVER_PID=""
  [[ $rc -eq 0 ]] || fail "ompq-server exited $rc after SIGTERM"
}

# start_worker ID [FLAGS...]: starts a remote ompq-worker with id ID against
# $OMPQ_SERVER, logging to $WORK/ID.log; its pid is in LAST_PID.
start_worker() {
  local id=$1
  shift
  "$BIN/ompq-worker" --server "$OMPQ_SERVER" --worker-id "$id" --work-dir "$WORK/$id" \
    --device cpu "$@" >>"$WORK/$id.log" 2>&1 &
  LAST_PID=$!
  WORKER_PIDS+=("$LAST_PID")
}

# wait_for_exit PID: waits up to 30 s for PID (a child of this shell) to exit; returns
# its exit code.
wait_for_exit() {
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && fail "process $1 still running after 30 s"
  wait "$1"
}

# wait_for_job NAME CONDITION SECONDS WHAT: polls `ompqctl get NAME --output json` until
# the Python expression CONDITION over the Job `d` holds; fails after SECONDS (a safety
# limit). The last Job is left in $WORK/job.out.
wait_for_job() {
  local name=$1 condition=$2 seconds=$3 what=$4
  local deadline=$(( $(date +%s) + seconds ))
  while true; do
    run_ctl 0 job get "$name" --output json
    [[ $(json_get "$WORK/job.out" "$condition") == True ]] && return 0
    if [[ $(date +%s) -ge $deadline ]]; then
      echo "--- last job: $(cat "$WORK/job.out")" >&2
      fail "$what: $name did not reach ($condition) within $seconds s"
    fi
    sleep 0.2
  done
}

# wait_for_log FILE PATTERN SECONDS WHAT: waits until FILE has a line matching the
# extended regex PATTERN; fails after SECONDS.
wait_for_log() {
  local file=$1 pattern=$2 seconds=$3 what=$4
  for _ in $(seq $(( seconds * 10 ))); do
    grep -Eq -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$what: no line matching '$pattern' in $(basename "$file") within $seconds s"
}

# submit NAME ARGS...: `ompqctl submit ARGS --output json`; the job's name in JOB.
submit() {
  local name=$1
  shift
  run_ctl 0 "$name" submit "$@" --output json
  JOB=$(json_get "$WORK/$name.out" 'd["name"]')
  [[ "$JOB" == jobs/* ]] || fail "$name: submit returned name '$JOB'"
}

# Job conditions for wait_for_job (Python over the Job `d`; proto3 JSON omits defaults).
RUNNING_IN_SEARCH='d.get("state") == "RUNNING" and d.get("stage") not in (None, "STAGE_UNSPECIFIED", "FETCHING_INPUTS")'

# check_report DIR JOB SAMPLES: the downloaded report.json of JOB names it, searched with
# SAMPLES samples, and covers the e2e model's five layers (check_artifacts.py holds the
# full contract for jobs with the default 32 samples).
check_report() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF' || fail "bad artifacts of $2 in $1"
import json, os, sys
out, job, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(os.path.join(out, "report.json")))
assert r["job"] == job, r["job"]
assert r["search"]["samples"] == samples, r["search"]["samples"]
assert [l["name"] for l in r["layers"]] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
assert os.path.getsize(os.path.join(out, "bit_config.json")) > 0
PYEOF
}
