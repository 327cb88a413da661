#!/usr/bin/env bash
# End-to-end fault test: a job that kills its worker every time it runs. The server
# supervises one local ompq-worker (--workers 1) and restarts it after each crash; after
# --max-attempts 3 the job ends FAILED with reason WORKER_LOST, and the server stays
# healthy: the next, ordinary job succeeds on the restarted worker.
#
# The crash comes from ompq-worker's test hook: with OMPQ_WORKER_FAULT=crash_on_label in
# its environment (inherited from the server here), a job labelled fault=crash makes the
# worker SIGKILL itself once the inputs are fetched, as a model that crashes LibTorch or
# meets the kernel's OOM killer would. Without the variable the hook does nothing.
#
# Usage: crash_loop_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

OMPQ_WORKER_FAULT=crash_on_label start_server main --workers 1 \
  --worker-binary "$BIN/ompq-worker" --lease-timeout 3s --max-attempts 3

submit crash model.pt --calib calib.pt --size "$BUDGET" --label fault=crash
CRASH=$JOB
run_ctl 1 crash_wait wait "$CRASH" --timeout 5m --output json
[[ $(json_get "$WORK/crash_wait.out" 'd["state"]') == FAILED ]] || fail "crash: not FAILED"
[[ $(json_get "$WORK/crash_wait.out" 'd["error"]["reason"]') == WORKER_LOST ]] ||
  fail "crash: reason is not WORKER_LOST"
[[ $(json_get "$WORK/crash_wait.out" 'd["attempt"]') == 3 ]] ||
  fail "crash: attempt is $(json_get "$WORK/crash_wait.out" 'd["attempt"]'), expected 3"
crashes=$(grep -c "worker local-0 (pid [0-9]*) was killed by signal 9" "$WORK/main.log" || true)
[[ $crashes -ge 3 ]] || fail "crash: the server saw $crashes worker crashes, expected 3"
[[ $(grep -c "$CRASH: OMPQ_WORKER_FAULT=crash_on_label" "$WORK/main.log") -eq 3 ]] ||
  fail "crash: the job did not start exactly 3 times"
pass "crash loop: FAILED WORKER_LOST after 3 attempts ($crashes worker crashes, each restarted)"

kill -0 "$SERVER_PID" || fail "the server died"
submit normal model.pt --calib calib.pt --size "$BUDGET" --label fault=none
NORMAL=$JOB
run_ctl 0 normal_wait wait "$NORMAL" --timeout 5m --output json
[[ $(json_get "$WORK/normal_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "normal: not SUCCEEDED"
[[ $(json_get "$WORK/normal_wait.out" 'd["attempt"]') == 1 ]] || fail "normal: attempt is not 1"
run_ctl 0 crash_get get "$CRASH" --output json
[[ $(json_get "$WORK/crash_get.out" 'd["state"]') == FAILED ]] || fail "crash: state changed"
pass "server healthy after the crash loop: the next job SUCCEEDED on attempt 1"

stop_server
echo "PASS"
