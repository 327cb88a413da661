#!/usr/bin/env bash
# End-to-end test of idempotent submission and cancellation, on a server with no local
# workers (--workers 0) so the test decides when a job may run:
#  e. two submits with one --request-id -> one job, the same name both times;
#  f. cancel of a queued job -> CANCELLED at once; of a running job (remote worker) ->
#     CANCELLED once the worker hears it at its next heartbeat; of a finished job ->
#     ompqctl exits 2 (FAILED_PRECONDITION) and the job stays SUCCEEDED.
#
# Usage: submit_cancel_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

start_server main --workers 0 --lease-timeout 5s

# --- e. duplicate submit with one request id -------------------------------------------------
submit first model.pt --calib calib.pt --size "$BUDGET" --request-id dup-1 --label test=dup
FIRST=$JOB
submit second model.pt --calib calib.pt --size "$BUDGET" --request-id dup-1 --label test=dup
[[ "$JOB" == "$FIRST" ]] || fail "duplicate submit: second name $JOB, first $FIRST"
run_ctl 0 dup_list list --label test=dup --output json
[[ $(json_get "$WORK/dup_list.out" 'len(d["jobs"])') == 1 ]] ||
  fail "duplicate submit: $(json_get "$WORK/dup_list.out" 'len(d["jobs"])') jobs"
submit other model.pt --calib calib.pt --size "$BUDGET" --request-id dup-2 --label test=dup
[[ "$JOB" != "$FIRST" ]] || fail "another request id returned the same job"
pass "e: duplicate submit with one --request-id -> one job ($FIRST)"

# --- f1. cancel a queued job ----------------------------------------------------------------
run_ctl 0 cancel_queued cancel "$FIRST"
run_ctl 0 cancelled_get get "$FIRST" --output json
[[ $(json_get "$WORK/cancelled_get.out" 'd["state"]') == CANCELLED ]] ||
  fail "cancel of a queued job: state $(json_get "$WORK/cancelled_get.out" 'd["state"]')"
run_ctl 1 cancelled_wait wait "$FIRST" --timeout 30s --output json
pass "f: cancel of a queued job -> CANCELLED at once"
run_ctl 0 cancel_other cancel "$JOB"  # Keep the queue to the next job alone.

# --- f2. cancel a running job ----------------------------------------------------------------
submit long model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 \
  --finetune none
LONG=$JOB
start_worker w1
WORKER=$LAST_PID
wait_for_job "$LONG" "$RUNNING_IN_SEARCH and d.get('worker') == 'w1'" 120 "job running on w1"
run_ctl 0 cancel_running cancel "$LONG"
run_ctl 1 long_wait wait "$LONG" --timeout 2m --output json
[[ $(json_get "$WORK/long_wait.out" 'd["state"]') == CANCELLED ]] ||
  fail "cancel of a running job: state $(json_get "$WORK/long_wait.out" 'd["state"]')"
wait_for_log "$WORK/w1.log" "$LONG: cancel requested" 30 "cancel of a running job"
pass "f: cancel of a running job -> CANCELLED (the worker heard it)"

# --- f3. cancel a finished job ----------------------------------------------------------------
submit done model.pt --calib calib.pt --size "$BUDGET" --seed 3
DONE=$JOB
run_ctl 0 done_wait wait "$DONE" --timeout 5m --output json
[[ $(json_get "$WORK/done_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "finished job: state"
run_ctl 2 cancel_done cancel "$DONE"
grep -qi "FAILED_PRECONDITION\|already\|finished\|SUCCEEDED" "$WORK/cancel_done.err" ||
  fail "cancel of a finished job: no reason in stderr: $(cat "$WORK/cancel_done.err")"
run_ctl 0 done_get get "$DONE" --output json
[[ $(json_get "$WORK/done_get.out" 'd["state"]') == SUCCEEDED ]] ||
  fail "cancel of a finished job changed its state"
pass "f: cancel of a finished job -> exit 2, job stays SUCCEEDED"

kill -TERM "$WORKER"
rc=0
wait_for_exit "$WORKER" || rc=$?
[[ $rc -eq 0 ]] || fail "w1 exited $rc after SIGTERM"
stop_server
echo "PASS"
