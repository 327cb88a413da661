#include "server/postgres_job_store.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <pqxx/pqxx>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "server/proto_time.h"

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

// Columns read back into a JobRecord, in this order.
constexpr char kRecordColumns[] =
    "seq, version, lease_id, lease_expire_us, run_deadline_us, state_time_us, "
    "stage_time_us, job, tenant";

// Connections one store opens for queries (the listener has one more of its own).
constexpr int kMaxConnections = 8;

// Why a libpqxx exception happened, as a Status; `broken` tells the caller to drop the
// connection instead of pooling it.
absl::Status ToStatus(const std::string& where, const char* what, const std::exception& e,
                      bool* broken) {
  const std::string message = absl::StrCat("job database ", where, ": ", what, ": ",
                                           absl::StripTrailingAsciiWhitespace(e.what()));
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    *broken = true;
    return absl::UnavailableError(
        absl::StrCat(message, " (connection lost; it is reopened on the next call)"));
  }
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    *broken = true;
    return absl::UnavailableError(absl::StrCat(
        message, " (connection lost while committing: the write may or may not have happened)"));
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql != nullptr) {
    const std::string& state = sql->sqlstate();
    // 40001 serialization failure, 40P01 deadlock: a concurrent writer won; retry.
    if (state == "40001" || state == "40P01") {
      return absl::AbortedError(message);
    }
    if (state == "23505") {
      return absl::AlreadyExistsError(message);
    }
    // Class 08 (connection exception) and 57P (server shutting down): drop the connection.
    if (absl::StartsWith(state, "08") || absl::StartsWith(state, "57P")) {
      *broken = true;
      return absl::UnavailableError(message);
    }
  }
  return absl::InternalError(message);
}

// Times are stored as microseconds since the epoch; unset (InfinitePast) as NULL, which
// libpqxx 6 sends for a null `const char*` parameter.
std::optional<std::string> TimeParam(absl::Time t) {
  if (t == absl::InfinitePast()) {
    return std::nullopt;
  }
  return absl::StrCat(absl::ToUnixMicros(t));
}
const char* OrNull(const std::optional<std::string>& text) {
  return text.has_value() ? text->c_str() : nullptr;
}
absl::Time ReadTime(const pqxx::field& field) {
  return field.is_null() ? absl::InfinitePast() : absl::FromUnixMicros(field.as<int64_t>());
}

// Reads the kRecordColumns of `row`; also returns seq.
absl::StatusOr<JobRecord> ReadRecord(const pqxx::row& row, int64_t* seq = nullptr) {
  JobRecord record;
  if (seq != nullptr) {
    *seq = row[0].as<int64_t>();
  }
  record.version = row[1].as<int64_t>();
  record.lease_id = row[2].c_str();
  record.lease_expire_time = ReadTime(row[3]);
  record.run_deadline = ReadTime(row[4]);
  record.state_time = ReadTime(row[5]);
  record.stage_time = ReadTime(row[6]);
  const pqxx::binarystring bytes(row[7]);
  if (!record.job.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("job database: a stored job does not parse");
  }
  record.tenant = row[8].c_str();
  return record;
}

// The same page tokens as SqliteJobStore: the seq of the last job on the page.
std::string EncodePageToken(int64_t seq) {
  return absl::WebSafeBase64Escape(absl::StrCat("seq:", seq));
}
absl::StatusOr<int64_t> DecodePageToken(const std::string& token) {
  std::string raw;
  if (absl::WebSafeBase64Unescape(token, &raw)) {
    absl::string_view rest = raw;
    int64_t seq = 0;
    if (absl::ConsumePrefix(&rest, "seq:") && absl::SimpleAtoi(rest, &seq) && seq > 0) {
      return seq;
    }
  }
  return absl::InvalidArgumentError(
      "page_token is not valid: pass the next_page_token of the previous response");
}

// Tags this store's notifications; random so replicas on many hosts do not collide.
std::string NewInstanceId() {
  std::random_device random;
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad8), absl::Hex(random(), absl::kZeroPad8));
}

// Creates or migrates the schema; one server at a time (the advisory lock), so replicas
// starting together do not race.
absl::Status Migrate(pqxx::connection& conn, const std::string& where) {
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

// Writes every column of `record` with `new_version` where the stored version is
// record.version, and announces it. ABORTED/NOT_FOUND as Update().
absl::Status WriteInTxn(pqxx::work& txn, const JobRecord& record, int64_t new_version,
                        const std::string& channel, const std::string& instance) {
  const pqxx::result updated = txn.exec_params(
      "UPDATE jobs SET state = $1, version = $2, lease_id = $3, lease_expire_us = $4, "
      "run_deadline_us = $5, state_time_us = $6, stage_time_us = $7, job = $8 "
      "WHERE name = $9 AND version = $10",
      static_cast<int>(record.job.state()), new_version, record.lease_id,
      OrNull(TimeParam(record.leased() ? record.lease_expire_time : absl::InfinitePast())),
      OrNull(TimeParam(record.leased() ? record.run_deadline : absl::InfinitePast())),
      OrNull(TimeParam(record.state_time)), OrNull(TimeParam(record.stage_time)),
      pqxx::binarystring(record.job.SerializeAsString()), record.job.name(), record.version);
  if (updated.affected_rows() != 1) {
    const pqxx::result exists =
        txn.exec_params("SELECT 1 FROM jobs WHERE name = $1", record.job.name());
    if (exists.empty()) {
      return absl::NotFoundError(absl::StrCat("job '", record.job.name(), "' not found"));
    }
    return absl::AbortedError(
        absl::StrCat("job '", record.job.name(), "' was changed concurrently; retry"));
  }
  // Delivered to listeners when (and only if) the transaction commits.
  txn.exec_params("SELECT pg_notify($1, $2)", channel,
                  absl::StrCat(instance, " ", record.job.name()));
  return absl::OkStatus();
}

// Receives notifications on the listener's connection.
class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection& conn, const std::string& channel,
           std::function<void(const std::string&)> on_payload)
      : pqxx::notification_receiver(conn, channel), on_payload_(std::move(on_payload)) {}
  void operator()(const std::string& payload, int /*backend_pid*/) override {
    on_payload_(payload);
  }

 private:
  std::function<void(const std::string&)> on_payload_;
};

}  // namespace

// GetJob is the hottest read (clients poll it): a statement prepared once per connection
// spares PostgreSQL parsing and planning it on every call (libpqxx prepares it lazily, on
// the connection's first use of it).
constexpr char kGetStatement[] = "ompq_get_job";

struct PostgresJobStore::Connection {
  explicit Connection(const std::string& url) : conn(url) {
    conn.prepare(kGetStatement,
                 absl::StrCat("SELECT ", kRecordColumns, " FROM jobs WHERE name = $1"));
  }
  pqxx::connection conn;
};

std::string RedactPostgresUrl(const std::string& url) {
  std::string out = url;
  const size_t authority = out.find("://");
  if (authority != std::string::npos) {
    const size_t start = authority + 3;
    const size_t end = std::min(out.find_first_of("/?", start), out.size());
    const size_t at = out.rfind('@', end);
    if (at != std::string::npos && at >= start) {
      const size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "***");
      }
    }
  }
  // libpq also takes the password as a query parameter.
  const size_t query = out.find('?');
  if (query != std::string::npos) {
    std::vector<std::string> params = absl::StrSplit(out.substr(query + 1), '&');
    for (std::string& param : params) {
      if (absl::StartsWith(param, "password=")) {
        param = "password=***";
      }
    }
    out = absl::StrCat(out.substr(0, query + 1), absl::StrJoin(params, "&"));
  }
  return out;
}

int PostgresJobStore::LatestSchemaVersion() { return kLatestVersion; }

PostgresJobStore::PostgresJobStore(std::string url, std::string channel)
    : url_(std::move(url)),
      redacted_url_(RedactPostgresUrl(url_)),
      channel_(std::move(channel)),
      instance_(NewInstanceId()) {
  if (::pipe2(wake_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    wake_fds_[0] = wake_fds_[1] = -1;
  }
}

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Open(const std::string& url) {
  const std::string where = RedactPostgresUrl(url);
  std::unique_ptr<Connection> conn;
  std::string schema;
  try {
    conn = std::make_unique<Connection>(url);
    const pqxx::row row = pqxx::nontransaction(conn->conn).exec1("SELECT current_schema()");
    if (row[0].is_null()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job database ", where,
          ": no schema to use (the search_path names none that exists); create it or fix "
          "the URL's options=-csearch_path=..."));
    }
    schema = row[0].c_str();
    RETURN_IF_ERROR(Migrate(conn->conn, where));
  } catch (const std::exception& e) {
    bool broken = false;
    absl::Status status = ToStatus(where, "cannot open", e, &broken);
    if (broken) {
      return absl::UnavailableError(
          absl::StrCat("cannot connect to job database ", where, ": ",
                       absl::StripTrailingAsciiWhitespace(e.what()),
                       " (is PostgreSQL running there, and does the database exist?)"));
    }
    return status;
  }
  // One channel per schema, so deployments sharing a database do not wake each other.
  std::string channel = schema == "public" ? "ompq_jobs" : absl::StrCat("ompq_jobs_", schema);
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(url, std::move(channel)));
  if (store->wake_fds_[0] < 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  {
    absl::MutexLock lock(&store->pool_mu_);
    store->idle_.push_back(std::move(conn));
    store->open_ = 1;
  }
  return store;
}

PostgresJobStore::~PostgresJobStore() {
  {
    absl::MutexLock lock(&listener_mu_);
    stop_ = true;
  }
  if (wake_fds_[1] >= 0) {
    const char byte = 0;
    // The pipe is non-blocking and only needs to be non-empty.
    [[maybe_unused]] ssize_t written = ::write(wake_fds_[1], &byte, 1);
  }
  if (listen_thread_.joinable()) {
    listen_thread_.join();
  }
  for (int fd : wake_fds_) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
}

absl::StatusOr<std::unique_ptr<PostgresJobStore::Connection>> PostgresJobStore::Acquire() {
  {
    absl::MutexLock lock(&pool_mu_);
    // Wait for an idle connection, or room for a new one.
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool_mu_) {
      return !idle_.empty() || open_ < kMaxConnections;
    };
    pool_mu_.Await(absl::Condition(&available));
    if (!idle_.empty()) {
      std::unique_ptr<Connection> conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
    ++open_;
  }
  // Connect outside the lock: it takes a round trip or more.
  try {
    return std::make_unique<Connection>(url_);
  } catch (const std::exception& e) {
    absl::MutexLock lock(&pool_mu_);
    --open_;
    return absl::UnavailableError(absl::StrCat("cannot connect to job database ", redacted_url_,
                                               ": ", absl::StripTrailingAsciiWhitespace(e.what())));
  }
}

void PostgresJobStore::Release(std::unique_ptr<Connection> conn, bool broken) {
  absl::MutexLock lock(&pool_mu_);
  if (broken || !conn->conn.is_open()) {
    --open_;
    return;  // Closed by its destructor; the next Acquire() opens a fresh one.
  }
  idle_.push_back(std::move(conn));
}

absl::Status PostgresJobStore::Run(const char* what,
                                   const std::function<absl::Status(Connection&)>& body) {
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Acquire());
  absl::Status status;
  bool broken = false;
  try {
    status = body(*conn);
  } catch (const std::exception& e) {
    status = ToStatus(redacted_url_, what, e, &broken);
    if (broken) {
      OMPQ_LOG(WARNING) << status.message();
    }
  }
  Release(std::move(conn), broken);
  return status;
}

absl::StatusOr<CreateResult> PostgresJobStore::Create(const JobRecord& record, int64_t max_queued) {
  CreateResult result;
  RETURN_IF_ERROR(Run("create", [&](Connection& c) -> absl::Status {
    pqxx::work txn(c.conn);
    // Creates take turns (per schema): the request_id lookup and the queue count below
    // then hold until commit, across every server.
    txn.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", channel_ + ".create");
    const v1::Job& job = record.job;
    if (!job.request_id().empty()) {
      const pqxx::result existing = txn.exec_params(
          absl::StrCat("SELECT ", kRecordColumns,
                       " FROM jobs WHERE request_id = $1 AND tenant = $2"),
          job.request_id(), record.tenant);
      if (!existing.empty()) {
        ASSIGN_OR_RETURN(result.record, ReadRecord(existing[0]));
        result.created = false;
        return absl::OkStatus();
      }
    }
    // The trigger-kept count (schema 3), the insert and the notification in one statement:
    // creates are serialised by the lock above until COMMIT, so every round trip made
    // while holding it bounds the creates per second of all servers together.
    const pqxx::result inserted = txn.exec_params(
        "WITH ins AS ("
        "INSERT INTO jobs (name, state, create_time_us, request_id, version, lease_id, "
        "lease_expire_us, run_deadline_us, state_time_us, stage_time_us, job, tenant) "
        "SELECT $1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11 "
        "WHERE COALESCE((SELECT n FROM job_counts WHERE state = $12), 0) < $13 "
        "RETURNING seq) "
        "SELECT seq, pg_notify($14, $15) FROM ins",
        job.name(), static_cast<int>(job.state()),
        absl::ToUnixMicros(FromProtoTimestamp(job.create_time())),
        job.request_id().empty() ? nullptr : job.request_id().c_str(), record.lease_id,
        OrNull(TimeParam(record.leased() ? record.lease_expire_time : absl::InfinitePast())),
        OrNull(TimeParam(record.leased() ? record.run_deadline : absl::InfinitePast())),
        OrNull(TimeParam(record.state_time)), OrNull(TimeParam(record.stage_time)),
        pqxx::binarystring(job.SerializeAsString()), record.tenant, static_cast<int>(v1::QUEUED),
        max_queued, channel_, absl::StrCat(instance_, " ", job.name()));
    if (inserted.empty()) {
      const pqxx::result counted = txn.exec_params(
          "SELECT n FROM job_counts WHERE state = $1", static_cast<int>(v1::QUEUED));
      const int64_t queued = counted.empty() ? 0 : counted[0][0].as<int64_t>();
      return absl::ResourceExhaustedError(
          absl::StrCat("the job queue is full (", queued,
                       " jobs queued); retry later, or raise the server's --max-queued-jobs"));
    }
    const int64_t seq = inserted[0][0].as<int64_t>();
    for (const auto& [key, value] : job.spec().labels()) {
      txn.exec_params("INSERT INTO job_labels (key, value, job_seq) VALUES ($1, $2, $3)", key,
                      value, seq);
    }
    txn.commit();
    result.record = record;
    result.record.version = 1;
    result.created = true;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<JobRecord> PostgresJobStore::Get(const std::string& name) {
  JobRecord record;
  RETURN_IF_ERROR(Run("get", [&](Connection& c) -> absl::Status {
    pqxx::nontransaction txn(c.conn);
    const pqxx::result rows = txn.exec_prepared(kGetStatement, name);
    if (rows.empty()) {
      return absl::NotFoundError(absl::StrCat("job '", name, "' not found"));
    }
    ASSIGN_OR_RETURN(record, ReadRecord(rows[0]));
    return absl::OkStatus();
  }));
  return record;
}

absl::StatusOr<JobPage> PostgresJobStore::List(const JobQuery& query) {
  int64_t below_seq = std::numeric_limits<int64_t>::max();
  if (!query.page_token.empty()) {
    ASSIGN_OR_RETURN(below_seq, DecodePageToken(query.page_token));
  }
  const int page_size = query.page_size > 0 ? query.page_size : 1;
  JobPage page;
  RETURN_IF_ERROR(Run("list", [&](Connection& c) -> absl::Status {
    pqxx::nontransaction txn(c.conn);
    // One statement for every filter combination: an unset filter's test is always true.
    // One extra row tells whether another page follows.
    const pqxx::result rows = txn.exec_params(
        absl::StrCat("SELECT ", kRecordColumns,
                     " FROM jobs WHERE seq < $1 AND ($2::int = 0 OR state = $2::int) AND "
                     "($3::text = '' OR seq IN (SELECT job_seq FROM job_labels "
                     "WHERE key = $3::text AND value = $4::text)) AND "
                     "($6::text = '' OR tenant = $6::text) ORDER BY seq DESC LIMIT $5"),
        below_seq, static_cast<int>(query.state), query.label_key, query.label_value,
        int64_t{page_size} + 1, query.tenant);
    int64_t last_seq = 0;
    for (const pqxx::row& row : rows) {
      if (static_cast<int>(page.jobs.size()) == page_size) {
        page.next_page_token = EncodePageToken(last_seq);
        break;
      }
      ASSIGN_OR_RETURN(JobRecord record, ReadRecord(row, &last_seq));
      page.jobs.push_back(std::move(record.job));
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<JobRecord> PostgresJobStore::Update(const JobRecord& record) {
  RETURN_IF_ERROR(Run("update", [&](Connection& c) -> absl::Status {
    pqxx::work txn(c.conn);
    RETURN_IF_ERROR(WriteInTxn(txn, record, record.version + 1, channel_, instance_));
    txn.commit();
    return absl::OkStatus();
  }));
  JobRecord stored = record;
  stored.version = record.version + 1;
  return stored;
}

absl::StatusOr<std::optional<JobRecord>> PostgresJobStore::ClaimOldestQueued(
    const std::function<void(JobRecord&)>& claim) {
  std::optional<JobRecord> claimed;
  RETURN_IF_ERROR(Run("claim", [&](Connection& c) -> absl::Status {
    pqxx::work txn(c.conn);
    // The row lock keeps every other claimer off this job until commit; SKIP LOCKED lets
    // them take the next one instead of waiting.
    const pqxx::result rows = txn.exec_params(
        absl::StrCat("SELECT ", kRecordColumns,
                     " FROM jobs WHERE state = $1 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"),
        static_cast<int>(v1::QUEUED));
    if (rows.empty()) {
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(JobRecord record, ReadRecord(rows[0]));
    claim(record);
    RETURN_IF_ERROR(WriteInTxn(txn, record, record.version + 1, channel_, instance_));
    txn.commit();
    record.version += 1;
    claimed = std::move(record);
    return absl::OkStatus();
  }));
  return claimed;
}

absl::StatusOr<std::vector<JobRecord>> PostgresJobStore::FindLeasedDueBy(absl::Time t) {
  const int64_t due_us =
      t == absl::InfiniteFuture() ? std::numeric_limits<int64_t>::max() : absl::ToUnixMicros(t);
  std::vector<JobRecord> due;
  RETURN_IF_ERROR(Run("find leased", [&](Connection& c) -> absl::Status {
    pqxx::nontransaction txn(c.conn);
    const pqxx::result rows = txn.exec_params(
        absl::StrCat("SELECT ", kRecordColumns,
                     " FROM jobs WHERE lease_id <> '' AND "
                     "(lease_expire_us <= $1 OR run_deadline_us <= $1) ORDER BY seq"),
        due_us);
    for (const pqxx::row& row : rows) {
      ASSIGN_OR_RETURN(JobRecord record, ReadRecord(row));
      due.push_back(std::move(record));
    }
    return absl::OkStatus();
  }));
  return due;
}

absl::Status PostgresJobStore::Delete(const std::string& name, int64_t version) {
  return Run("delete", [&](Connection& c) -> absl::Status {
    pqxx::work txn(c.conn);
    // Labels go with the job (ON DELETE CASCADE).
    const pqxx::result deleted =
        txn.exec_params("DELETE FROM jobs WHERE name = $1 AND version = $2", name, version);
    if (deleted.affected_rows() != 1) {
      if (txn.exec_params("SELECT 1 FROM jobs WHERE name = $1", name).empty()) {
        return absl::NotFoundError(absl::StrCat("job '", name, "' not found"));
      }
      return absl::AbortedError(absl::StrCat("job '", name, "' was changed concurrently; retry"));
    }
    txn.commit();
    return absl::OkStatus();
  });
}

absl::StatusOr<std::map<v1::JobState, int64_t>> PostgresJobStore::CountByState() {
  std::map<v1::JobState, int64_t> counts;
  RETURN_IF_ERROR(Run("count", [&](Connection& c) -> absl::Status {
    pqxx::nontransaction txn(c.conn);
    for (const pqxx::row& row : txn.exec("SELECT state, n FROM job_counts WHERE n > 0")) {
      counts[static_cast<v1::JobState>(row[0].as<int>())] = row[1].as<int64_t>();
    }
    return absl::OkStatus();
  }));
  return counts;
}

void PostgresJobStore::SetChangeListener(std::function<void(const std::string&)> listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
  if (listener_ && !listen_thread_.joinable()) {
    listen_thread_ = std::thread([this] { ListenLoop(); });
    // Wait for the first LISTEN (or its failure), so a change made after this returns is
    // not missed.
    listener_mu_.Await(absl::Condition(&listen_attempted_));
  }
}

void PostgresJobStore::Deliver(const std::string& payload) {
  // "INSTANCE NAME"; our own writes were published in-process already.
  const size_t space = payload.find(' ');
  if (space == std::string::npos || payload.compare(0, space, instance_) == 0) {
    return;
  }
  absl::MutexLock lock(&listener_mu_);
  if (listener_) {
    listener_(payload.substr(space + 1));
  }
}

void PostgresJobStore::ListenLoop() {
  absl::Duration backoff = absl::Milliseconds(100);
  bool reconnecting = false;
  while (true) {
    try {
      pqxx::connection conn(url_);
      Receiver receiver(conn, channel_, [this](const std::string& payload) { Deliver(payload); });
      {
        absl::MutexLock lock(&listener_mu_);
        listen_attempted_ = true;
        // Changes made while we were disconnected were not heard: let the listener
        // re-check everything.
        if (reconnecting && listener_) {
          OMPQ_LOG(INFO) << "job database " << redacted_url_ << ": change feed reconnected";
          listener_("");
        }
      }
      backoff = absl::Milliseconds(100);
      while (true) {
        if (!conn.is_open()) {
          throw pqxx::broken_connection("the listener's connection closed");
        }
        pollfd fds[2] = {{conn.sock(), POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
          throw pqxx::broken_connection(absl::StrCat("poll: ", std::strerror(errno)));
        }
        if (fds[1].revents != 0) {
          return;  // Stopping.
        }
        conn.get_notifs();  // Throws broken_connection when the server went away.
      }
    } catch (const std::exception& e) {
      OMPQ_LOG(WARNING) << "job database " << redacted_url_ << ": change feed lost ("
                        << absl::StripTrailingAsciiWhitespace(e.what())
                        << "); other servers' changes are not seen until it reconnects in "
                        << backoff;
    }
    absl::MutexLock lock(&listener_mu_);
    listen_attempted_ = true;
    reconnecting = true;
    if (listener_mu_.AwaitWithTimeout(absl::Condition(&stop_), backoff)) {
      return;
    }
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace ompq
