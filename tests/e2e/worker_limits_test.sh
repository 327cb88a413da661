#!/usr/bin/env bash
# End-to-end test of ompq-worker's resource limits, with remote workers on a server that
# has no local ones (--workers 0):
#  - --job-time-limit: a job running past it ends FAILED with DEADLINE_EXCEEDED on its
#    first attempt (not retried), and the worker goes on serving;
#  - --memory-limit (RLIMIT_AS): LibTorch starts and an ordinary job succeeds under a
#    generous limit; a job that needs more than a tight limit fails with
#    RESOURCE_EXHAUSTED while the worker process survives.
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
submit slow model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512
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
submit hungry model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --seed 6
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
echo "PASS"
