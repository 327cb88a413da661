#!/usr/bin/env bash
# `ompqctl health` against real servers (the exec probes of deploy/k8s/server.yaml):
#  - plaintext: SERVING, exit 0, text and --output json;
#  - TLS (a certificate naming only ompq-server, as in the deployment): with --tls-ca and
#    --tls-server-name ompq-server while dialling 127.0.0.1 (the probe's way) -> exit 0;
#    without the CA, or checking another name -> exit 4 with a message;
#  - draining (SIGTERM; its local worker is SIGSTOPped, so the drain waits on it for the
#    worker stop grace): NOT_SERVING, exit 1, saying it is draining;
#  - a SIGSTOPped server -> exit 4 after --timeout; an exited server -> exit 4.
#
# Usage: health_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
unset OMPQ_TOKEN

# --- plaintext ------------------------------------------------------------------------------------
start_server plain --workers 0
run_ctl 0 plain health
[[ $(cat "$WORK/plain.out") == SERVING ]] || fail "plaintext: printed '$(cat "$WORK/plain.out")'"
run_ctl 0 plain_json health --output json
[[ $(json_get "$WORK/plain_json.out" 'd["status"]') == SERVING ]] ||
  fail "plaintext json: $(cat "$WORK/plain_json.out")"
[[ $(json_get "$WORK/plain_json.out" 'd["server"]') == "$OMPQ_SERVER" ]] ||
  fail "plaintext json names another server: $(cat "$WORK/plain_json.out")"
pass "plaintext: SERVING, exit 0 (text and json)"

# A stopped process accepts connections (the kernel does) but never answers.
kill -STOP "$SERVER_PID"
run_ctl 4 stopped health --timeout 1s
kill -CONT "$SERVER_PID"
grep -q "did not answer in time" "$WORK/stopped.err" || fail "stopped: $(cat "$WORK/stopped.err")"
pass "SIGSTOPped server: exit 4 after --timeout"
stop_server
run_ctl 4 gone health
grep -q "cannot reach ompq-server" "$WORK/gone.err" || fail "exited: $(cat "$WORK/gone.err")"
pass "exited server: exit 4"

# --- TLS ----------------------------------------------------------------------------------------
mkdir "$WORK/pki"
(
  cd "$WORK/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=ompq-e2e-ca \
    -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj /CN=ompq-server -keyout server.key -out server.csr
  printf 'subjectAltName=DNS:ompq-server,DNS:ompq-server.ompq.svc\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.pem
) >"$WORK/openssl.out" 2>&1 || { cat "$WORK/openssl.out" >&2; fail "openssl CLI failed"; }

# One local worker: stopped below, it holds the drain open for --worker-stop-grace.
start_server tls --workers 1 --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key"
run_ctl 0 tls health --tls-ca "$WORK/pki/ca.pem" --tls-server-name ompq-server
[[ $(cat "$WORK/tls.out") == SERVING ]] || fail "TLS: printed '$(cat "$WORK/tls.out")'"
pass "TLS with --tls-ca and --tls-server-name, dialling 127.0.0.1: SERVING, exit 0"
run_ctl 4 tls_noname health --tls-ca "$WORK/pki/ca.pem"
run_ctl 4 tls_plain health
run_ctl 2 tls_nameonly health --tls-server-name ompq-server
grep -q -- "--tls-ca" "$WORK/tls_nameonly.err" || fail "name without CA: $(cat "$WORK/tls_nameonly.err")"
pass "TLS: 127.0.0.1 not in the certificate -> exit 4; plaintext -> exit 4; a name without CA -> exit 2"

# Draining: health is NOT_SERVING from SIGTERM until the gRPC server stops; the stopped
# child worker keeps the drain in that state for up to the worker stop grace (10 s).
CHILD=""
for _ in $(seq 300); do
  CHILD=$(pgrep -P "$SERVER_PID" -x ompq-worker || true)
  [[ -n "$CHILD" ]] && break
  sleep 0.1
done
[[ -n "$CHILD" ]] || fail "the server started no local worker"
# Stopped only once it serves: a worker stopped while still starting has no SIGTERM
# handler yet and dies at once when resumed.
for _ in $(seq 300); do
  grep -q "\[local-0\] serving jobs" "$WORK/tls.log" && break
  sleep 0.1
done
grep -q "\[local-0\] serving jobs" "$WORK/tls.log" || fail "the local worker never started serving"
WORKER_PIDS+=("$CHILD")  # Resumed and killed by the cleanup if still there.
kill -STOP "$CHILD"
kill -TERM "$SERVER_PID"
rc=0
for _ in $(seq 50); do
  rc=0
  timeout 60 "$BIN/ompqctl" health --tls-ca "$WORK/pki/ca.pem" --tls-server-name ompq-server \
    >"$WORK/drain.out" 2>"$WORK/drain.err" || rc=$?
  [[ $rc -ne 0 ]] && break
  sleep 0.1
done
kill -CONT "$CHILD" 2>/dev/null || true
[[ $rc -eq 1 ]] || fail "draining: exit $rc, expected 1: $(cat "$WORK/drain.out" "$WORK/drain.err")"
[[ $(cat "$WORK/drain.out") == NOT_SERVING ]] || fail "draining: printed '$(cat "$WORK/drain.out")'"
grep -q "draining" "$WORK/drain.err" || fail "draining: stderr $(cat "$WORK/drain.err")"
pass "draining server: NOT_SERVING, exit 1"
rc=0
wait_for_exit "$SERVER_PID" || rc=$?
SERVER_PID=""
[[ $rc -eq 0 ]] || fail "ompq-server exited $rc after SIGTERM"
pass "server drained and exited 0"
