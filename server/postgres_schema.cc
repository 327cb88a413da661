#include "server/postgres_schema.h"

#include <iterator>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace ompq {
namespace {

// Migrations in order: migration i takes the schema from version i to i + 1. Never edit
// one that has shipped; append a new one.
constexpr const char* kMigrations[] = {
    // 1: jobs, with the queried fields in indexed columns and the Job proto serialised.
    R"sql(
CREATE TABLE jobs (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
  name TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  create_time_us BIGINT NOT NULL,
  request_id TEXT UNIQUE,                 -- NULL when none was given
  version BIGINT NOT NULL,
  lease_id TEXT NOT NULL DEFAULT '',
  lease_expire_us BIGINT,                 -- NULL unless leased
  run_deadline_us BIGINT,                 -- NULL unless leased
  state_time_us BIGINT,
  stage_time_us BIGINT,
  job BYTEA NOT NULL                      -- serialised ompq.v1.Job
);
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_lease_expire ON jobs (lease_expire_us) WHERE lease_expire_us IS NOT NULL;
CREATE INDEX jobs_by_run_deadline ON jobs (run_deadline_us) WHERE run_deadline_us IS NOT NULL;
CREATE TABLE job_labels (
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  job_seq BIGINT NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
  PRIMARY KEY (key, value, job_seq)
);
CREATE INDEX job_labels_by_job ON job_labels (job_seq);
)sql",
    // 2: jobs get a tenant (existing rows: the default one); request_id is unique per
    // tenant.
    R"sql(
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs DROP CONSTRAINT jobs_request_id_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_tenant_request_id_key UNIQUE (tenant, request_id);
CREATE INDEX jobs_by_tenant ON jobs (tenant, seq);
)sql",
    // 3: jobs per state, kept by a trigger (as SQLite's schema 3): CreateJob checks the
    // queue limit and the metrics read the gauges without a COUNT(*) over every queued
    // row, which held the create lock for milliseconds once the queue was long. Writers of
    // an older server are held off (the table lock) while the counts are seeded.
    R"sql(
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE job_counts (
  state INTEGER PRIMARY KEY,
  n BIGINT NOT NULL
);
INSERT INTO job_counts (state, n) SELECT state, COUNT(*) FROM jobs GROUP BY state;
CREATE FUNCTION job_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_state INTEGER;
  new_state INTEGER;
BEGIN
  IF TG_OP <> 'INSERT' THEN old_state := OLD.state; END IF;
  IF TG_OP <> 'DELETE' THEN new_state := NEW.state; END IF;
  IF old_state IS NOT DISTINCT FROM new_state THEN RETURN NULL; END IF;
  -- Every write changes one job, and its counters are locked in state order: two
  -- transitions in opposite directions (QUEUED->RUNNING, RUNNING->QUEUED) cannot deadlock.
  PERFORM 1 FROM job_counts WHERE state IN (old_state, new_state) ORDER BY state FOR UPDATE;
  IF old_state IS NOT NULL THEN
    UPDATE job_counts SET n = n - 1 WHERE state = old_state;
  END IF;
  IF new_state IS NOT NULL THEN
    INSERT INTO job_counts (state, n) VALUES (new_state, 1)
      ON CONFLICT (state) DO UPDATE SET n = job_counts.n + 1;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER job_counts_track AFTER INSERT OR DELETE OR UPDATE OF state ON jobs
  FOR EACH ROW EXECUTE FUNCTION job_counts_track();
)sql",
};
constexpr int kLatestVersion = static_cast<int>(std::size(kMigrations));

}  // namespace

int PostgresSchemaVersion() { return kLatestVersion; }

// One server at a time (the advisory lock), so replicas starting together do not race.
absl::Status MigratePostgresSchema(pqxx::connection& conn, const std::string& where) {
  pqxx::work txn(conn);
  txn.exec("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.ompq.migrate'))");
  // CREATE ... IF NOT EXISTS reports "already exists" as a NOTICE, which libpqxx prints.
  txn.exec("SET LOCAL client_min_messages = warning");
  txn.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  const pqxx::result found = txn.exec("SELECT version FROM schema_version");
  const int current = found.empty() ? 0 : found[0][0].as<int>();
  if (current > kLatestVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("job database ", where, " has schema version ", current,
                     ", newer than this server's ", kLatestVersion, ": upgrade the server"));
  }
  if (current == kLatestVersion) {
    return absl::OkStatus();
  }
  for (int version = current; version < kLatestVersion; ++version) {
    txn.exec(kMigrations[version]);
  }
  txn.exec("DELETE FROM schema_version");
  txn.exec_params("INSERT INTO schema_version (version) VALUES ($1)", kLatestVersion);
  txn.commit();
  OMPQ_LOG(INFO) << "job database " << where << ": schema migrated from version " << current
                 << " to " << kLatestVersion;
  return absl::OkStatus();
}

}  // namespace ompq
