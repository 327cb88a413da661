#!/usr/bin/env bash
# End-to-end test of server replicas: two ompq-server processes (--workers 0) on one
# PostgreSQL database and one --blob-dir, three remote ompq-worker processes spread over
# them. Jobs are submitted through both servers; one server is SIGKILLed while a job runs
# on a worker attached to it and others are queued. Every job ends SUCCEEDED exactly once.
#
# What is checked, and how:
# - cross-server wake-up: a worker long-polling server A is handed a job created on server
#   B by the very poll that was parked when the job was created (the worker's
#   ompq_worker_lease_polls_total{result="empty"} does not move), which only PostgreSQL
#   LISTEN/NOTIFY can cause: without it the poll would run out its 20 s wait first;
# - failover: the job running on A's worker when A dies is requeued once its lease lapses
#   and finished by a worker on B (attempt >= 2); everything submitted through A is served
#   by B, and a repeated request_id through B finds the job A created;
# - exactly once: a trigger installed by this test records every committed write of the
#   jobs table (version, state, lease). Per job the versions must run 1..n without gaps or
#   repeats (no lost or doubled write), a lease may only follow a released one (never two
#   leases at once: no worker could complete a job another worker held), SUCCEEDED is
#   written once and last, and the leases granted equal the job's attempts.
#
# PostgreSQL: $OMPQ_TEST_POSTGRES_URL (scripts/test.sh starts one), else this test starts
# its own throwaway cluster with scripts/pg-test-server.sh. Either way it works in a fresh
# database of its own, dropped at the end.
#
# Usage: replicas_test.sh BIN_DIR   (ctest passes the build's bin/)
source "$(dirname "$0")/lib.sh"
e2e_init "$@"
REPO=$(cd "$HERE/../.." && pwd)

A_PID=""
B_PID=""
PG_OWN_DIR=""
ADMIN_URL=""
DB=""

replicas_cleanup() {
  local rc=$?
  set +e  # Clean up everything, whatever fails; lib.sh's cleanup reports rc.
  local pid
  for pid in "$A_PID" "$B_PID"; do
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$DB" && -n "$ADMIN_URL" ]]; then
    psql "$ADMIN_URL" -qAt -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 ||
      echo "warning: could not drop database $DB" >&2
  fi
  if [[ -n "$PG_OWN_DIR" ]]; then
    bash "$REPO/scripts/pg-test-server.sh" stop "$PG_OWN_DIR" >/dev/null 2>&1 || true
    rm -rf "$PG_OWN_DIR"
  fi
  (exit "$rc")
  e2e_cleanup
}
trap replicas_cleanup EXIT

# --- PostgreSQL: a fresh database ------------------------------------------------------
if [[ -n "${OMPQ_TEST_POSTGRES_URL:-}" ]]; then
  ADMIN_URL=$OMPQ_TEST_POSTGRES_URL
else
  # Outside $WORK: as root the cluster runs as `postgres`, which cannot enter $WORK (0700).
  PG_OWN_DIR=$(mktemp -d /tmp/ompq-e2e-pg.XXXXXX)
  ADMIN_URL=$(bash "$REPO/scripts/pg-test-server.sh" start "$PG_OWN_DIR") ||
    fail "OMPQ_TEST_POSTGRES_URL is unset and scripts/pg-test-server.sh could not start one"
  pass "started a throwaway PostgreSQL at $ADMIN_URL"
fi
DB="ompq_replicas_$$_$RANDOM"
psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE $DB" >/dev/null ||
  fail "cannot create database $DB in $ADMIN_URL"
base=${ADMIN_URL%%\?*}
DB_URL="${base%/*}/$DB${ADMIN_URL#"$base"}"
sql() { psql "$DB_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
pass "database $DB"

make_inputs
cd "$WORK/in"

# --- Two servers on one database and one blob directory -----------------------------------
SERVER_FLAGS=(--workers 0 --database "$DB_URL" --blob-dir "$WORK/blobs" --lease-timeout 5s
  --max-attempts 3)
# metrics_port NAME: the /metrics port a server or worker logged.
metrics_port() {
  wait_for_log "$WORK/$1.log" 'metrics on port [0-9]+' 60 "$1 metrics port"
  grep -Eo 'metrics on port [0-9]+' "$WORK/$1.log" | head -n1 | grep -Eo '[0-9]+$'
}
start_server a "${SERVER_FLAGS[@]}"
A_PID=$SERVER_PID
A_ADDR=$OMPQ_SERVER
A_METRICS=$(metrics_port a)
start_server b "${SERVER_FLAGS[@]}"
B_PID=$SERVER_PID
B_ADDR=$OMPQ_SERVER
SERVER_PID=""  # Both are stopped here or by replicas_cleanup, not by lib.sh.

# The audit trail of the exactly-once checks (see the header). The servers created the
# schema; the trigger only observes, in the same transaction as each write.
sql >/dev/null <<'SQL'
CREATE TABLE job_audit (
  id BIGSERIAL PRIMARY KEY,
  name TEXT NOT NULL,
  version BIGINT NOT NULL,
  state INTEGER NOT NULL,
  lease_id TEXT NOT NULL
);
CREATE FUNCTION job_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_audit (name, version, state, lease_id)
    VALUES (NEW.name, NEW.version, NEW.state, NEW.lease_id);
  RETURN NEW;
END $$;
CREATE TRIGGER job_audit AFTER INSERT OR UPDATE ON jobs
  FOR EACH ROW EXECUTE FUNCTION job_audit_row();
SQL
pass "audit trigger on the jobs table"

# scrape_value PORT SERIES: the value of SERIES (name and labels as exposed) at PORT.
scrape_value() {
  curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" >"$WORK/scrape.prom" ||
    fail "cannot scrape 127.0.0.1:$1/metrics"
  "$PY" - "$WORK/scrape.prom" "$2" <<'PYEOF'
import sys
for line in open(sys.argv[1]):
    name, _, value = line.rstrip("\n").rpartition(" ")
    if not line.startswith("#") and name == sys.argv[2]:
        print(int(float(value)))
        break
else:
    sys.exit("absent: " + sys.argv[2])
PYEOF
}

JOBS=()  # Every job this test created.

# --- Cross-server wake-up: w1 waits on A, the job is created on B --------------------------
OMPQ_SERVER=$A_ADDR start_worker w1 --metrics-listen 127.0.0.1:0
W1_PID=$LAST_PID
W1_METRICS=$(metrics_port w1)
for _ in $(seq 600); do
  [[ $(scrape_value "$A_METRICS" 'ompq_workers{state="idle"}') == 1 ]] && break
  sleep 0.1
done
[[ $(scrape_value "$A_METRICS" 'ompq_workers{state="idle"}') == 1 ]] ||
  fail "w1 never parked a long poll on server a"

EMPTY='ompq_worker_lease_polls_total{result="empty"}'
woken=""
# A poll may run out its wait just as a job is submitted (a few hundred ms in 20 s); then
# the trial cannot tell and another is made. Without the wake-up every trial fails.
for trial in 1 2 3; do
  before=$(scrape_value "$W1_METRICS" "$EMPTY")
  OMPQ_SERVER=$B_ADDR submit "wake$trial" model.pt --calib calib.pt --size "$BUDGET" \
    --request-id "replicas-wake-$trial"
  JOBS+=("$JOB")
  OMPQ_SERVER=$B_ADDR wait_for_job "$JOB" 'd.get("attempt", 0) >= 1' 120 \
    "job created on b leased by w1 (on a)"
  after=$(scrape_value "$W1_METRICS" "$EMPTY")
  OMPQ_SERVER=$B_ADDR run_ctl 0 "wake${trial}_wait" wait "$JOB" --timeout 5m --output json
  [[ $(json_get "$WORK/wake${trial}_wait.out" 'd["state"]') == SUCCEEDED ]] ||
    fail "$JOB did not succeed"
  grep -q "$JOB: completed as SUCCEEDED" "$WORK/w1.log" || fail "$JOB was not run by w1"
  if [[ "$after" == "$before" ]]; then
    woken=$trial
    break
  fi
  echo "trial $trial inconclusive: a long poll of w1 ran out while $JOB was submitted"
done
[[ -n "$woken" ]] ||
  fail "w1 (on a) got jobs created on b only after its long polls ran out: no cross-server wake-up"
pass "a job created on b woke w1's long poll parked on a (trial $woken)"

# --- Failover: more jobs through both servers, then SIGKILL server a -----------------------
declare -A VIA  # job -> the server it was submitted through
# job1 through a, while w1 is a's only worker. Once w1 runs it, w1 is paused (SIGSTOP) so
# that it is surely still running job1 when a dies, however fast the machine is.
OMPQ_SERVER=$A_ADDR submit job1 model.pt --calib calib.pt --size "$BUDGET" \
  --request-id replicas-1
KILLED_JOB=$JOB
JOBS+=("$JOB")
VIA[$JOB]=a
OMPQ_SERVER=$A_ADDR wait_for_job "$KILLED_JOB" \
  'd.get("worker") == "w1" and d.get("state") == "RUNNING"' 120 "job1 running on w1"
kill -STOP "$W1_PID"
OMPQ_SERVER=$A_ADDR run_ctl 0 job1_get get "$KILLED_JOB" --output json
[[ $(json_get "$WORK/job1_get.out" 'd["state"]') == RUNNING ]] ||
  fail "job1 finished before w1 could be paused: $(cat "$WORK/job1_get.out")"
OMPQ_SERVER=$B_ADDR start_worker w2
OMPQ_SERVER=$B_ADDR start_worker w3
# More jobs through both servers; those through a reach w2/w3 by b's LISTEN.
for i in 2 3 4 5 6; do
  if (( i % 2 )); then addr=$A_ADDR; via=a; else addr=$B_ADDR; via=b; fi
  OMPQ_SERVER=$addr submit "job$i" model.pt --calib calib.pt --size "$BUDGET" \
    --request-id "replicas-$i"
  JOBS+=("$JOB")
  VIA[$JOB]=$via
done
OMPQ_SERVER=$B_ADDR run_ctl 0 list list --output json
queued=$(json_get "$WORK/list.out" 'sum(j.get("state") == "QUEUED" for j in d["jobs"])')
running=$(json_get "$WORK/list.out" 'sum(j.get("state") == "RUNNING" for j in d["jobs"])')
kill -KILL "$A_PID"
rc=0
wait "$A_PID" || rc=$?
[[ $rc -eq 137 ]] || fail "server a exited $rc, expected 137 (SIGKILL)"
A_PID=""
kill -CONT "$W1_PID"  # w1 goes on with job1 but can no longer reach its server.
pass "server a SIGKILLed with $KILLED_JOB held by w1; $running running, $queued queued"

# b serves what was submitted through a; a repeated request_id finds a's job.
export OMPQ_SERVER=$B_ADDR
submit again model.pt --calib calib.pt --size "$BUDGET" --request-id replicas-1
[[ "$JOB" == "$KILLED_JOB" ]] || fail "request_id replicas-1 through b gave $JOB, not $KILLED_JOB"
for job in "${JOBS[@]}"; do
  run_ctl 0 final wait "$job" --timeout 280s --output json  # run_ctl allows 300 s
  [[ $(json_get "$WORK/final.out" 'd["state"]') == SUCCEEDED ]] ||
    fail "$job (via ${VIA[$job]:-b}) ended $(json_get "$WORK/final.out" 'd["state"]')"
  echo "$job $(json_get "$WORK/final.out" 'd.get("attempt", 0)')" >>"$WORK/attempts.txt"
done
run_ctl 0 list list --output json
[[ $(json_get "$WORK/list.out" 'len(d["jobs"])') -eq ${#JOBS[@]} ]] ||
  fail "b lists $(json_get "$WORK/list.out" 'len(d["jobs"])') jobs, expected ${#JOBS[@]}"
killed_attempt=$(awk -v j="$KILLED_JOB" '$1 == j {print $2}' "$WORK/attempts.txt")
[[ "$killed_attempt" -ge 2 ]] ||
  fail "$KILLED_JOB was running on w1 when a died, yet succeeded on attempt $killed_attempt"
! grep -q "$KILLED_JOB: completed as" "$WORK/w1.log" ||
  fail "w1 completed $KILLED_JOB although its server was dead"
run_ctl 0 download download "$KILLED_JOB" --out "$WORK/killed_out"
"$PY" "$HERE/check_artifacts.py" "$WORK/killed_out" "$BUDGET" "$KILLED_JOB" ||
  fail "bad artifacts of $KILLED_JOB"
pass "all ${#JOBS[@]} jobs SUCCEEDED through b; $KILLED_JOB on attempt $killed_attempt"

# --- Exactly once, from the database's own record ---------------------------------------
sql -F ' ' -c "SELECT name, version, state, lease_id FROM job_audit ORDER BY id" \
  >"$WORK/audit.txt"
"$PY" - "$WORK/audit.txt" "$WORK/attempts.txt" <<'PYEOF' || fail "audit trail check failed"
import collections, sys
SUCCEEDED = 3
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split(" ")
    name, version, state = parts[0], int(parts[1]), int(parts[2])
    lease = parts[3] if len(parts) > 3 else ""
    rows[name].append((version, state, lease))
attempts = {l.split()[0]: int(l.split()[1]) for l in open(sys.argv[2])}
assert set(rows) == set(attempts), (sorted(rows), sorted(attempts))
for name, history in rows.items():
    versions = [v for v, _, _ in history]
    assert versions == list(range(1, len(versions) + 1)), (name, versions)
    leases = []
    for (_, _, prev), (_, _, cur) in zip(history, history[1:]):
        # A lease only ever follows a released one: never two holders at once.
        assert not (prev and cur and prev != cur), (name, "lease", prev, "replaced by", cur)
    for _, _, lease in history:
        if lease and (not leases or leases[-1] != lease):
            leases.append(lease)
    assert len(set(leases)) == len(leases), (name, "a lease came back", leases)
    assert len(leases) == attempts[name], (name, len(leases), "leases for", attempts[name], "attempts")
    succeeded = [i for i, (_, s, _) in enumerate(history) if s == SUCCEEDED]
    assert succeeded == [len(history) - 1], (name, "SUCCEEDED written at", succeeded, "of", len(history))
    assert history[-1][2] == "", (name, "still leased", history[-1])
print(f"{len(rows)} jobs, {sum(map(len, rows.values()))} writes audited; "
      f"{sum(attempts.values())} leases for {len(rows)} jobs")
PYEOF
pass "audit: versions contiguous, one lease at a time, SUCCEEDED once per job"

# Each success was reported by exactly one worker.
for job in "${JOBS[@]}"; do
  n=$(cat "$WORK"/w[123].log | grep -c "$job: completed as SUCCEEDED" || true)
  [[ "$n" -le 1 ]] || fail "$job: $n workers saw their completion accepted"
done
[[ $(scrape_value "$W1_METRICS" 'ompq_worker_lease_errors_total') -ge 1 ]] ||
  fail "w1 counted no failed LeaseJob call although its server is dead"
kill -0 "$W1_PID" || fail "w1 died while its server was away"
pass "w1 still retrying the dead server a"

stop_server_pid() {
  kill -TERM "$1"
  local rc=0
  wait_for_exit "$1" || rc=$?
  [[ $rc -eq 0 ]] || fail "ompq-server exited $rc after SIGTERM"
}
stop_server_pid "$B_PID"
B_PID=""
echo "PASS"
