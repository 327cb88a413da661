#!/usr/bin/env bash
# End-to-end authentication matrix (issue 5, item 6), with the real binaries:
#  tokens (--auth-tokens: client tokens of tenants alice and bob, one worker token):
#   - no token -> ompqctl exits 4 saying how to pass one; an unknown token -> exit 4;
#   - a client token on WorkerService (an ompq-worker started with it) is refused and the
#     worker never gets the job; a worker token on QuantizationService -> exit 4;
#   - bob cannot see, cancel or download alice's job (NOT_FOUND, exit 2), nor list it;
#   - alice's job runs on a worker holding the worker token and she downloads it;
#   - no token appears in any log;
#  TLS (--tls-cert/--tls-key, certificates made with the openssl CLI here):
#   - ompqctl --tls-ca quantizes through it (the local worker included);
#   - a plaintext ompqctl against it exits 4;
#  a non-loopback --listen without TLS and without --insecure is refused at start.
#
# Usage: auth_matrix_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
make_inputs
cd "$WORK/in"
unset OMPQ_TOKEN

# Fresh random tokens, so finding one in a log means it was logged.
new_token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ALICE=$(new_token)
BOB=$(new_token)
WORKER_TOKEN=$(new_token)
cat >"$WORK/tokens" <<TOKENS
# token tenant role
$ALICE alice client
$BOB bob client
$WORKER_TOKEN pool worker
TOKENS

start_server auth --workers 0 --auth-tokens "$WORK/tokens" --lease-timeout 5s

# --- no token, unknown token -------------------------------------------------------------------
run_ctl 4 notoken_list list
grep -q -- "--token" "$WORK/notoken_list.err" && grep -q "OMPQ_TOKEN" "$WORK/notoken_list.err" ||
  fail "no token: stderr does not say how to pass one: $(cat "$WORK/notoken_list.err")"
run_ctl 4 notoken_submit submit model.pt --calib calib.pt --size "$BUDGET"
grep -q -- "--token" "$WORK/notoken_submit.err" || fail "no token on submit: no hint"
pass "no token: exit 4 with a message naming --token / OMPQ_TOKEN"
run_ctl 4 wrong_list list --token "$(new_token)"
grep -qi "refused the credentials" "$WORK/wrong_list.err" ||
  fail "unknown token: $(cat "$WORK/wrong_list.err")"
pass "unknown token: exit 4"
run_ctl 4 worker_on_client list --token "$WORKER_TOKEN"
grep -qi "client token" "$WORK/worker_on_client.err" ||
  fail "worker token on QuantizationService: $(cat "$WORK/worker_on_client.err")"
pass "worker token on QuantizationService: exit 4 (needs a client token)"

# --- alice submits; no worker with a worker token yet ----------------------------------------------
submit alice_submit model.pt --calib calib.pt --size "$BUDGET" --token "$ALICE"
AJOB=$JOB

# A worker holding a client token is refused by WorkerService, stops, never gets the job.
start_worker thief --token "$ALICE"
THIEF=$LAST_PID
rc=0
wait_for_exit "$THIEF" || rc=$?
[[ $rc -ne 0 ]] || fail "worker with a client token exited 0"
grep -q "refused this worker" "$WORK/thief.log" &&
  grep -q "WorkerService needs a worker token" "$WORK/thief.log" ||
  fail "worker with a client token: no refusal in its log"
grep -q "$AJOB" "$WORK/thief.log" && fail "worker with a client token saw $AJOB"
run_ctl 0 alice_get get "$AJOB" --token "$ALICE" --output json
[[ $(json_get "$WORK/alice_get.out" 'd["state"]') == QUEUED ]] ||
  fail "after the refused worker: $AJOB is $(json_get "$WORK/alice_get.out" 'd["state"]')"
[[ $(json_get "$WORK/alice_get.out" 'd.get("attempt", 0)') == 0 ]] ||
  fail "after the refused worker: $AJOB was started"
pass "client token on WorkerService: refused (exit $rc), the job stays QUEUED, never leased"

# --- bob and alice's job (still queued: a cancel that got through would show) ------------------------
run_ctl 2 bob_get get "$AJOB" --token "$BOB"
grep -qi "not found" "$WORK/bob_get.err" || fail "bob get: $(cat "$WORK/bob_get.err")"
run_ctl 2 bob_cancel cancel "$AJOB" --token "$BOB"
grep -qi "not found" "$WORK/bob_cancel.err" || fail "bob cancel: $(cat "$WORK/bob_cancel.err")"
run_ctl 2 bob_download download "$AJOB" --out "$WORK/bob_out" --token "$BOB"
grep -qi "not found" "$WORK/bob_download.err" ||
  fail "bob download: $(cat "$WORK/bob_download.err")"
run_ctl 0 bob_list list --token "$BOB" --output json
[[ $(json_get "$WORK/bob_list.out" 'len(d.get("jobs", []))') == 0 ]] ||
  fail "bob's list shows jobs: $(cat "$WORK/bob_list.out")"
run_ctl 0 alice_list list --token "$ALICE" --output json
[[ $(json_get "$WORK/alice_list.out" '[j["name"] for j in d["jobs"]]') == "['$AJOB']" ]] ||
  fail "alice's list: $(cat "$WORK/alice_list.out")"
run_ctl 0 alice_get2 get "$AJOB" --token "$ALICE" --output json
[[ $(json_get "$WORK/alice_get2.out" 'd["state"]') == QUEUED ]] || fail "bob's cancel got through"
pass "bob: get/cancel/download of alice's job -> NOT_FOUND (exit 2); his list is empty"

# --- a worker with the worker token runs it; only alice downloads ------------------------------------
start_worker pool --token "$WORKER_TOKEN"
POOL=$LAST_PID
run_ctl 0 alice_wait wait "$AJOB" --timeout 5m --token "$ALICE" --output json
[[ $(json_get "$WORK/alice_wait.out" 'd["state"]') == SUCCEEDED ]] || fail "alice's job did not succeed"
run_ctl 0 alice_download download "$AJOB" --out "$WORK/alice_out" --token "$ALICE"
check_report "$WORK/alice_out" "$AJOB" 32
run_ctl 2 bob_download2 download "$AJOB" --out "$WORK/bob_out" --token "$BOB"
[[ ! -e "$WORK/bob_out/report.json" ]] || fail "bob downloaded alice's report"
pass "worker token: alice's job SUCCEEDED, alice downloads it, bob still cannot"
kill -TERM "$POOL"
rc=0
wait_for_exit "$POOL" || rc=$?
[[ $rc -eq 0 ]] || fail "pool worker exited $rc after SIGTERM"
stop_server

for token in "$ALICE" "$BOB" "$WORKER_TOKEN"; do
  for log in "$WORK"/*.log; do
    grep -qF "$token" "$log" && fail "a token appears in $(basename "$log")"
  done
done
pass "no token in the server's or the workers' logs"

# --- TLS ------------------------------------------------------------------------------------------
mkdir "$WORK/pki"
(
  cd "$WORK/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ompq-e2e-ca \
    -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.pem
) >"$WORK/openssl.out" 2>&1 || { cat "$WORK/openssl.out" >&2; fail "openssl CLI failed"; }

start_server tls --workers 1 --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key"
run_ctl 0 tls_quantize quantize model.pt --calib calib.pt --size "$BUDGET" --seed 4 \
  --out "$WORK/tls_out" --tls-ca "$WORK/pki/ca.pem"
TLS_JOB=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["job"])' \
  "$WORK/tls_out/report.json")
check_report "$WORK/tls_out" "$TLS_JOB" 32
pass "TLS: ompqctl --tls-ca quantizes through it ($TLS_JOB, local worker)"
run_ctl 4 plain_list list
pass "TLS: a plaintext ompqctl exits 4"
stop_server

# --- plaintext on a non-loopback address -------------------------------------------------------------
rc=0
timeout 60 "$BIN/ompq-server" --listen 0.0.0.0:0 --data-dir "$WORK/open" --metrics-listen "" \
  --workers 0 >"$WORK/open.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "plaintext on 0.0.0.0: exit $rc, expected 2"
grep -q "refusing to serve plaintext" "$WORK/open.out" && grep -q -- "--insecure" "$WORK/open.out" &&
  grep -q -- "--tls-cert" "$WORK/open.out" || fail "plaintext on 0.0.0.0: $(cat "$WORK/open.out")"
pass "plaintext on 0.0.0.0 without --insecure: refused at start (exit 2) naming --tls-cert/--insecure"
echo "PASS"
