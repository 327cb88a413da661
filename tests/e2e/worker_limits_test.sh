#!/usr/bin/env bash
# End-to-end test of ompq-worker's resource limits, with remote workers on a server that
# has no local ones (--workers 0):
#  - --job-time-limit: a job running past it ends FAILED with DEADLINE_EXCEEDED on its
#    first attempt (not retried), and the worker goes on serving;
#  - --memory-limit (RLIMIT_AS): LibTorch starts and an ordinary job succeeds under a
#    generous limit; a job that needs more than a tight limit fails with
#    RESOURCE_EXHAUSTED while the worker process survives;
#  - the same limits given on ompq-server's command line (--worker-job-time-limit,
#    --worker-memory-limit) reach its local (child) workers and are enforced there.
#
# Usage: worker_limits_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

start_server main --workers 0 --lease-timeout 5s

# --- --job-time-limit -----------------------------------------------------------------------
start_worker timed --job-time-limit 2s
TIMED=$LAST_PID
submit slow model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --finetune none
SLOW=$JOB
run_ctl 1 slow_wait wait "$SLOW" --timeout 5m --output json
[[ $(json_get "$WORK/slow_wait.out" 'd["state"]') == FAILED ]] || fail "time limit: not FAILED"
[[ $(json_get "$WORK/slow_wait.out" 'd["error"]["reason"]') == DEADLINE_EXCEEDED ]] ||
  fail "time limit: reason is not DEADLINE_EXCEEDED"
[[ $(json_get "$WORK/slow_wait.out" 'd["attempt"]') == 1 ]] || fail "time limit: retried"
json_get "$WORK/slow_wait.out" 'd["error"]["message"]' | grep -q -- "--job-time-limit" ||
  fail "time limit: message does not name --job-time-limit"
kill -0 "$TIMED" || fail "time limit: the worker died"
pass "--job-time-limit: FAILED DEADLINE_EXCEEDED on attempt 1, worker alive"
kill -TERM "$TIMED"
rc=0
wait_for_exit "$TIMED" || rc=$?
[[ $rc -eq 0 ]] || fail "timed exited $rc after SIGTERM"

# --- --memory-limit -----------------------------------------------------------------------------
# Thread pools and malloc arenas reserve address space per core; pin them so the limits
# below mean the same on any machine.
export OMP_NUM_THREADS=1 MALLOC_ARENA_MAX=2
start_worker bounded --memory-limit 1500MiB
BOUNDED=$LAST_PID
submit small model.pt --calib calib.pt --size "$BUDGET" --seed 5
SMALL=$JOB
run_ctl 0 small_wait wait "$SMALL" --timeout 5m --output json
[[ $(json_get "$WORK/small_wait.out" 'd["state"]') == SUCCEEDED ]] ||
  fail "memory limit: an ordinary job did not succeed under --memory-limit 1500MiB"
pass "--memory-limit 1500MiB: LibTorch starts and an ordinary job SUCCEEDED"
# 512 samples of 3x96x96 and their activations need well over 1.5 GiB.
submit hungry model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --finetune none --seed 6
HUNGRY=$JOB
run_ctl 1 hungry_wait wait "$HUNGRY" --timeout 5m --output json
[[ $(json_get "$WORK/hungry_wait.out" 'd["state"]') == FAILED ]] || fail "memory limit: not FAILED"
[[ $(json_get "$WORK/hungry_wait.out" 'd["error"]["reason"]') == RESOURCE_EXHAUSTED ]] ||
  fail "memory limit: reason $(json_get "$WORK/hungry_wait.out" 'd["error"]')"
[[ $(json_get "$WORK/hungry_wait.out" 'd["attempt"]') == 1 ]] || fail "memory limit: retried"
json_get "$WORK/hungry_wait.out" 'd["error"]["message"]' | grep -q -- "--memory-limit" ||
  fail "memory limit: message does not name --memory-limit"
[[ $(json_get "$WORK/hungry_wait.out" 'd["error"]["message"].count(chr(10))') == 0 ]] ||
  fail "memory limit: message is not one line"
kill -0 "$BOUNDED" || fail "memory limit: the worker died"
# The same worker serves the next job.
submit after model.pt --calib calib.pt --size "$BUDGET" --seed 8
run_ctl 0 after_wait wait "$JOB" --timeout 5m --output json
grep -q "$JOB: completed as SUCCEEDED" "$WORK/bounded.log" ||
  fail "memory limit: the bounded worker did not run the next job"
pass "--memory-limit: a job past it FAILED RESOURCE_EXHAUSTED; the worker lives and serves on"
kill -TERM "$BOUNDED"
rc=0
wait_for_exit "$BOUNDED" || rc=$?
[[ $rc -eq 0 ]] || fail "bounded exited $rc after SIGTERM"

# A malformed limit: the worker refuses to start and says why.
rc=0
timeout 60 "$BIN/ompq-worker" --server "$OMPQ_SERVER" --worker-id bad --memory-limit lots \
  >"$WORK/bad_limit.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "--memory-limit lots: exit $rc, expected 2"
grep -q -- "--memory-limit" "$WORK/bad_limit.out" || fail "--memory-limit lots: no message"
pass "--memory-limit with a bad value: exit 2 with a message"

stop_server

# --- the server's --worker-* limits reach its local workers ------------------------------------
# local_children: the pids of the server's child processes (its local workers), in CHILDREN.
local_children() {
  CHILDREN=()
  for _ in $(seq 300); do
    mapfile -t CHILDREN < <(pgrep -P "$SERVER_PID" || true)
    [[ ${#CHILDREN[@]} -gt 0 ]] && return 0
    sleep 0.1
  done
  fail "no local worker started under the server"
}

start_server local_time --workers 1 --lease-timeout 5s --worker-job-time-limit 2s
submit local_slow model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --finetune none --seed 9
run_ctl 1 local_slow_wait wait "$JOB" --timeout 5m --output json
[[ $(json_get "$WORK/local_slow_wait.out" 'd["error"]["reason"]') == DEADLINE_EXCEEDED ]] ||
  fail "--worker-job-time-limit: $(json_get "$WORK/local_slow_wait.out" 'd.get("error")')"
[[ $(json_get "$WORK/local_slow_wait.out" 'd["attempt"]') == 1 ]] ||
  fail "--worker-job-time-limit: retried"
[[ $(json_get "$WORK/local_slow_wait.out" 'd["worker"]') == local-0 ]] ||
  fail "--worker-job-time-limit: not run by the local worker"
# The worker's own limit (its message names --job-time-limit), not a server-side timeout.
json_get "$WORK/local_slow_wait.out" 'd["error"]["message"]' | grep -q -- "--job-time-limit" ||
  fail "--worker-job-time-limit: the local worker did not enforce it"
pass "--worker-job-time-limit 2s: the local worker ended the job DEADLINE_EXCEEDED"
stop_server

start_server local_mem --workers 1 --lease-timeout 5s --worker-memory-limit 1500MiB
local_children
# The child applies the limit at start, before it serves (its log line says so).
wait_for_log "$WORK/local_mem.log" "\[local-0\] serving jobs" 120 "local worker start"
limit=$(awk '/^Max address space/ {print $4}' "/proc/${CHILDREN[0]}/limits")
[[ "$limit" == $((1500 * 1024 * 1024)) ]] ||
  fail "--worker-memory-limit 1500MiB: the local worker's RLIMIT_AS is '$limit'"
submit local_hungry model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --finetune none --seed 10
run_ctl 1 local_hungry_wait wait "$JOB" --timeout 5m --output json
[[ $(json_get "$WORK/local_hungry_wait.out" 'd["error"]["reason"]') == RESOURCE_EXHAUSTED ]] ||
  fail "--worker-memory-limit: $(json_get "$WORK/local_hungry_wait.out" 'd.get("error")')"
json_get "$WORK/local_hungry_wait.out" 'd["error"]["message"]' | grep -q -- "--memory-limit" ||
  fail "--worker-memory-limit: the message does not name the worker's --memory-limit"
submit local_small model.pt --calib calib.pt --size "$BUDGET" --seed 11
run_ctl 0 local_small_wait wait "$JOB" --timeout 5m --output json
pass "--worker-memory-limit 1500MiB: the local worker has RLIMIT_AS $limit; a job past it" \
  "FAILED RESOURCE_EXHAUSTED, the next SUCCEEDED"
stop_server

# A malformed server-side limit: refused at start with a message.
rc=0
timeout 60 "$BIN/ompq-server" --listen 127.0.0.1:0 --data-dir "$WORK/badflag" \
  --metrics-listen "" --worker-memory-limit lots >"$WORK/bad_server_limit.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "--worker-memory-limit lots: exit $rc, expected 2"
grep -q -- "--worker-memory-limit" "$WORK/bad_server_limit.out" ||
  fail "--worker-memory-limit lots: no message"
pass "--worker-memory-limit with a bad value: the server exits 2 with a message"
echo "PASS"
