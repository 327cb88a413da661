#!/usr/bin/env bash
# End-to-end fault test: the server is SIGKILLed with one job running on a remote worker
# and one queued, then restarted on the same --data-dir and port. No job is lost: both
# end SUCCEEDED (the running one completed by its still-live worker, or requeued once its
# lease lapsed and run again).
#
# Usage: server_restart_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"

SERVER_FLAGS=(--workers 0 --lease-timeout 5s --max-attempts 3)
start_server main "${SERVER_FLAGS[@]}"
start_worker w1
WORKER=$LAST_PID

submit running model.pt --calib big_calib.pt --size "$BUDGET" --search-samples 512 \
  --finetune none
RUNNING=$JOB
wait_for_job "$RUNNING" "$RUNNING_IN_SEARCH and d.get('worker') == 'w1'" 120 "job running on w1"
# One worker, busy: this one stays queued.
submit queued model.pt --calib calib.pt --size "$BUDGET" --seed 7
QUEUED=$JOB
run_ctl 0 queued_get get "$QUEUED" --output json
[[ $(json_get "$WORK/queued_get.out" 'd["state"]') == QUEUED ]] || fail "second job not QUEUED"

kill -KILL "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
[[ $rc -eq 137 ]] || fail "server exited $rc, expected 137 (SIGKILL)"
SERVER_PID=""
pass "server SIGKILLed with $RUNNING RUNNING and $QUEUED QUEUED"

# Same data dir, same port: the worker reconnects with backoff on its own.
LISTEN="127.0.0.1:$PORT" start_server main "${SERVER_FLAGS[@]}"
run_ctl 0 running_wait wait "$RUNNING" --timeout 5m --output json
[[ $(json_get "$WORK/running_wait.out" 'd["state"]') == SUCCEEDED ]] ||
  fail "the running job did not succeed after the restart"
run_ctl 0 queued_wait wait "$QUEUED" --timeout 5m --output json
[[ $(json_get "$WORK/queued_wait.out" 'd["state"]') == SUCCEEDED ]] ||
  fail "the queued job did not succeed after the restart"
run_ctl 0 list list --output json
[[ $(json_get "$WORK/list.out" 'sorted(j["name"] for j in d["jobs"])') == \
   "$("$PY" -c 'import sys; print(sorted(sys.argv[1:]))' "$RUNNING" "$QUEUED")" ]] ||
  fail "jobs after the restart: $(cat "$WORK/list.out")"
run_ctl 0 download download "$RUNNING" --out "$WORK/running_out"
check_report "$WORK/running_out" "$RUNNING" 512
run_ctl 0 download_queued download "$QUEUED" --out "$WORK/queued_out"
"$PY" "$HERE/check_artifacts.py" "$WORK/queued_out" "$BUDGET" "$QUEUED" ||
  fail "bad artifacts of the queued job"
kill -0 "$WORKER" || fail "the worker died while the server was away"
pass "after restart: running job SUCCEEDED (attempt $(json_get "$WORK/running_wait.out" 'd["attempt"]')), queued job SUCCEEDED, no job lost"

kill -TERM "$WORKER"
rc=0
wait_for_exit "$WORKER" || rc=$?
[[ $rc -eq 0 ]] || fail "w1 exited $rc after SIGTERM"
stop_server
echo "PASS"
