#!/usr/bin/env bash
# End-to-end fault test: remote workers that die or freeze mid-job. A server with no
# local workers (--workers 0) and a short --lease-timeout; the test starts and signals the
# ompq-worker processes itself.
#  a. SIGKILL of the worker running a job: the lease lapses, the job is requeued and
#     succeeds on attempt 2 on another worker.
#  b. SIGSTOP of the worker running a job: it stops heartbeating, loses its lease, the
#     job is requeued and finished by another worker (attempt 2); SIGCONT: the resumed
#     worker's lease is refused (ABORTED) and the job stays SUCCEEDED from attempt 2.
#
# Usage: worker_faults_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

start_server main --workers 0 --lease-timeout 3s --max-attempts 3

# A search long enough to be interrupted mid-way (tens of seconds on 2 cores).
# PTQ is off: the point is a long search to interrupt, and a retry that ends soon after.
LONG_JOB=(model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 --finetune none)

# --- a. SIGKILL mid-job ----------------------------------------------------------------------
submit killed "${LONG_JOB[@]}" --label test=kill
KILLED=$JOB
start_worker victim-a
VICTIM=$LAST_PID
wait_for_job "$KILLED" "$RUNNING_IN_SEARCH and d.get('worker') == 'victim-a'" 120 \
  "kill: job running on victim-a"
[[ $(json_get "$WORK/job.out" 'd["attempt"]') == 1 ]] || fail "kill: first attempt is not 1"
STAGE=$(json_get "$WORK/job.out" 'd["stage"]')
kill -KILL "$VICTIM"
rc=0
wait "$VICTIM" || rc=$?
[[ $rc -eq 137 ]] || fail "kill: victim-a exited $rc, expected 137 (SIGKILL)"
pass "a: SIGKILLed victim-a while the job was RUNNING in stage $STAGE"
# Only after the lease lapses (3 s) may the job run again.
start_worker rescuer-a
run_ctl 0 killed_wait wait "$KILLED" --timeout 5m --output json
[[ $(json_get "$WORK/killed_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "kill: not SUCCEEDED"
[[ $(json_get "$WORK/killed_wait.out" 'd["attempt"]') == 2 ]] ||
  fail "kill: attempt is $(json_get "$WORK/killed_wait.out" 'd["attempt"]'), expected 2"
grep -q "$KILLED: completed as SUCCEEDED" "$WORK/rescuer-a.log" ||
  fail "kill: rescuer-a did not complete the job"
run_ctl 0 killed_download download "$KILLED" --out "$WORK/killed_out"
check_report "$WORK/killed_out" "$KILLED" 512
pass "a: worker SIGKILL mid-job -> SUCCEEDED on attempt 2 by another worker"
kill -TERM "$LAST_PID"
rc=0
wait_for_exit "$LAST_PID" || rc=$?
[[ $rc -eq 0 ]] || fail "rescuer-a exited $rc after SIGTERM"

# --- b. SIGSTOP: a frozen worker loses its lease; its late word is refused ---------------------
submit stopped "${LONG_JOB[@]}" --label test=stop
STOPPED=$JOB
start_worker frozen-b
FROZEN=$LAST_PID
wait_for_job "$STOPPED" "$RUNNING_IN_SEARCH and d.get('worker') == 'frozen-b'" 120 \
  "stop: job running on frozen-b"
kill -STOP "$FROZEN"
pass "b: SIGSTOPped frozen-b while the job was RUNNING"
start_worker rescuer-b
# The lease lapses after 3 s without a heartbeat: attempt 2 on rescuer-b.
wait_for_job "$STOPPED" "d.get('attempt') == 2 and d.get('worker') == 'rescuer-b'" 120 \
  "stop: job requeued to rescuer-b"
run_ctl 0 stopped_wait wait "$STOPPED" --timeout 5m --output json
[[ $(json_get "$WORK/stopped_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "stop: not SUCCEEDED"
[[ $(json_get "$WORK/stopped_wait.out" 'd["attempt"]') == 2 ]] || fail "stop: attempt is not 2"
grep -q "$STOPPED: completed as SUCCEEDED" "$WORK/rescuer-b.log" ||
  fail "stop: rescuer-b did not complete the job"
RESULT_BEFORE=$(json_get "$WORK/stopped_wait.out" 'json.dumps(d.get("result"), sort_keys=True)')
kill -CONT "$FROZEN"
# The resumed worker's next heartbeat (or its CompleteJob) carries the old lease: refused.
wait_for_log "$WORK/frozen-b.log" "$STOPPED: (lease lost|CompleteJob failed).*" 60 \
  "stop: resumed worker"
grep -E "$STOPPED: (lease lost|CompleteJob failed)" "$WORK/frozen-b.log" |
  grep -q "ABORTED" || fail "stop: the resumed worker was not refused with ABORTED"
if grep -q "$STOPPED: completed as" "$WORK/frozen-b.log"; then
  fail "stop: the resumed worker's completion was accepted"
fi
run_ctl 0 stopped_get get "$STOPPED" --output json
[[ $(json_get "$WORK/stopped_get.out" 'd["state"]') == SUCCEEDED ]] ||
  fail "stop: state changed after the resumed worker spoke"
[[ $(json_get "$WORK/stopped_get.out" 'd["attempt"]') == 2 ]] ||
  fail "stop: attempt changed after the resumed worker spoke"
[[ $(json_get "$WORK/stopped_get.out" 'json.dumps(d.get("result"), sort_keys=True)') == \
   "$RESULT_BEFORE" ]] || fail "stop: result changed after the resumed worker spoke"
# The resumed worker is fit for more work: it stops cleanly.
kill -TERM "$FROZEN"
rc=0
wait_for_exit "$FROZEN" || rc=$?
[[ $rc -eq 0 ]] || fail "frozen-b exited $rc after SIGTERM"
pass "b: SIGSTOPped worker lost its lease; job SUCCEEDED on attempt 2; resumed worker refused"

stop_server
echo "PASS"
