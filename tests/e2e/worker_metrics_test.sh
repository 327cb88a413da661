#!/usr/bin/env bash
# End-to-end test of worker-side metrics: a real ompq-server and a remote ompq-worker with
# --metrics-listen; one job succeeds and one fails (an infeasible budget). The worker's
# /metrics must count each by result, time every stage the job went through, time the
# jobs, show the worker idle again, and count the long polls that brought the jobs.
# Values are checked for counts only, never for durations.
#
# Usage: worker_metrics_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

# scrape PORT NAME: /metrics of 127.0.0.1:PORT into $WORK/NAME.prom.
scrape() {
  curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" >"$WORK/$2.prom" ||
    fail "cannot scrape 127.0.0.1:$1/metrics"
}

# metric FILE SERIES: the value of the exposition line that starts with SERIES (name and
# labels exactly as exposed), or "absent".
metric() {
  "$PY" - "$WORK/$1.prom" "$2" <<'PYEOF'
import sys
path, series = sys.argv[1], sys.argv[2]
for line in open(path):
    if line.startswith("#"):
        continue
    name, _, value = line.rstrip("\n").rpartition(" ")
    if name == series:
        v = float(value)
        print(int(v) if v.is_integer() else v)
        break
else:
    print("absent")
PYEOF
}

# expect FILE SERIES VALUE: fails unless SERIES has VALUE in FILE.
expect() {
  local got
  got=$(metric "$1" "$2")
  [[ "$got" == "$3" ]] || fail "$1: $2 is $got, expected $3"
}

start_server main --workers 0
start_worker w1 --metrics-listen 127.0.0.1:0
WORKER=$LAST_PID
wait_for_log "$WORK/w1.log" 'metrics on port [0-9]+' 60 "w1 metrics"
METRICS_PORT=$(grep -Eo 'metrics on port [0-9]+' "$WORK/w1.log" | head -n1 | grep -Eo '[0-9]+$')
[[ "$METRICS_PORT" -gt 0 ]] || fail "w1 logged metrics port '$METRICS_PORT'"

scrape "$METRICS_PORT" before
expect before 'ompq_worker_busy' 0
expect before 'ompq_worker_jobs_total{result="succeeded"}' 0
expect before 'ompq_worker_job_seconds_count' 0
expect before 'ompq_worker_lease_polls_total{result="job"}' 0
# Debian's LibTorch is CPU-only and this worker runs on --device cpu: no CUDA gauges.
expect before 'ompq_worker_device_memory_bytes{kind="allocated"}' absent
pass "w1 serves /metrics on port $METRICS_PORT; nothing counted yet"

submit ok model.pt --calib calib.pt --size "$BUDGET" --finetune none
OK_JOB=$JOB
run_ctl 0 ok_wait wait "$OK_JOB" --timeout 5m --output json
[[ $(json_get "$WORK/ok_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "$OK_JOB did not succeed"
# The worker counts the job once CompleteJob has answered, just after the server's state.
wait_for_log "$WORK/w1.log" "$OK_JOB: completed as SUCCEEDED" 60 "w1 completion"

scrape "$METRICS_PORT" after_ok
expect after_ok 'ompq_worker_jobs_total{result="succeeded"}' 1
expect after_ok 'ompq_worker_jobs_total{result="failed"}' 0
expect after_ok 'ompq_worker_jobs_total{result="lost"}' 0
expect after_ok 'ompq_worker_job_seconds_count' 1
expect after_ok 'ompq_worker_busy' 0
expect after_ok 'ompq_worker_lease_polls_total{result="job"}' 1
expect after_ok 'ompq_worker_lease_errors_total' 0
# Every stage of the search, once each.
for stage in FETCHING_INPUTS ANALYZING ORTHOGONALITY SOLVING EXPORTING; do
  expect after_ok "ompq_worker_stage_seconds_count{stage=\"$stage\"}" 1
done
# Stages the search does not run are not invented.
expect after_ok 'ompq_worker_stage_seconds_count{stage="FINETUNING"}' absent
pass "after one job: succeeded 1, job_seconds count 1, five stages timed once, idle"

# 100 bytes cannot hold the model: the job fails with INFEASIBLE_BUDGET.
submit bad model.pt --calib calib.pt --size 100
BAD_JOB=$JOB
run_ctl 1 bad_wait wait "$BAD_JOB" --timeout 5m --output json
[[ $(json_get "$WORK/bad_wait.out" 'd["state"]') == FAILED ]] || fail "$BAD_JOB did not fail"
[[ $(json_get "$WORK/bad_wait.out" 'd["error"]["reason"]') == INFEASIBLE_BUDGET ]] ||
  fail "$BAD_JOB: reason is not INFEASIBLE_BUDGET"
wait_for_log "$WORK/w1.log" "$BAD_JOB: completed as FAILED" 60 "w1 failure report"

scrape "$METRICS_PORT" after_bad
expect after_bad 'ompq_worker_jobs_total{result="succeeded"}' 1
expect after_bad 'ompq_worker_jobs_total{result="failed"}' 1
expect after_bad 'ompq_worker_job_seconds_count' 2
expect after_bad 'ompq_worker_lease_polls_total{result="job"}' 2
expect after_bad 'ompq_worker_stage_seconds_count{stage="FETCHING_INPUTS"}' 2
expect after_bad 'ompq_worker_busy' 0
grep -q '^# TYPE ompq_worker_stage_seconds histogram' "$WORK/after_bad.prom" ||
  fail "ompq_worker_stage_seconds is not exposed as a histogram"
pass "after a failing job: failed 1, succeeded still 1, job_seconds count 2"

kill -TERM "$WORKER"
rc=0
wait_for_exit "$WORKER" || rc=$?
[[ $rc -eq 0 ]] || fail "w1 exited $rc after SIGTERM"
stop_server
echo "PASS"
