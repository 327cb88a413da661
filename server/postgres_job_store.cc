#include "server/postgres_job_store.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <pqxx/pqxx>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "server/job_row_codec.h"
#include "server/postgres_schema.h"

namespace ompq {
namespace {

using job_row::kRecordColumns;

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

// A time column's parameter (job_row::TimeColumn): its microseconds as text, or a null
// `const char*` for NULL (libpqxx 6 sends it as NULL).
std::optional<std::string> TimeParam(const std::optional<int64_t>& micros) {
  if (!micros.has_value()) {
    return std::nullopt;
  }
  return absl::StrCat(*micros);
}
const char* OrNull(const std::optional<std::string>& text) {
  return text.has_value() ? text->c_str() : nullptr;
}
std::optional<int64_t> Micros(const pqxx::field& field) {
  return field.is_null() ? std::nullopt : std::optional<int64_t>(field.as<int64_t>());
}
absl::string_view Text(const pqxx::field& field) { return {field.c_str(), field.size()}; }

// Reads the kRecordColumns of `row`; also returns seq.
absl::StatusOr<JobRecord> ReadRecord(const pqxx::row& row, int64_t* seq = nullptr) {
  const pqxx::binarystring job(row[7]);  // BYTEA arrives escaped.
  return job_row::DecodeRecord(
      {row[0].as<int64_t>(), row[1].as<int64_t>(), Text(row[2]), Micros(row[3]), Micros(row[4]),
       Micros(row[5]), Micros(row[6]),
       absl::string_view(reinterpret_cast<const char*>(job.data()), job.size()), Text(row[8])},
      seq);
}

// Tags this store's notifications; random so replicas on many hosts do not collide.
std::string NewInstanceId() {
  std::random_device random;
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad8), absl::Hex(random(), absl::kZeroPad8));
}

// Writes every column of `record` with `new_version` where the stored version is
// record.version, and announces it. ABORTED/NOT_FOUND as Update().
absl::Status WriteInTxn(pqxx::work& txn, const JobRecord& record, int64_t new_version,
                        const std::string& channel, const std::string& instance) {
  const job_row::RowValues values = job_row::EncodeRecord(record);
  const pqxx::result updated = txn.exec_params(
      "UPDATE jobs SET state = $1, version = $2, lease_id = $3, lease_expire_us = $4, "
      "run_deadline_us = $5, state_time_us = $6, stage_time_us = $7, job = $8 "
      "WHERE name = $9 AND version = $10",
      static_cast<int>(record.job.state()), new_version, record.lease_id,
      OrNull(TimeParam(values.lease_expire_us)), OrNull(TimeParam(values.run_deadline_us)),
      OrNull(TimeParam(values.state_time_us)), OrNull(TimeParam(values.stage_time_us)),
      pqxx::binarystring(values.job), record.job.name(), record.version);
  if (updated.affected_rows() != 1) {
    const pqxx::result exists =
        txn.exec_params("SELECT 1 FROM jobs WHERE name = $1", record.job.name());
    if (exists.empty()) {
      return job_row::NotFoundError(record.job.name());
    }
    return job_row::ChangedConcurrentlyError(record.job.name());
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

int PostgresJobStore::LatestSchemaVersion() { return PostgresSchemaVersion(); }

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
    RETURN_IF_ERROR(MigratePostgresSchema(conn->conn, where));
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
    const job_row::RowValues values = job_row::EncodeRecord(record);
    const pqxx::result inserted = txn.exec_params(
        "WITH ins AS ("
        "INSERT INTO jobs (name, state, create_time_us, request_id, version, lease_id, "
        "lease_expire_us, run_deadline_us, state_time_us, stage_time_us, job, tenant) "
        "SELECT $1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11 "
        "WHERE COALESCE((SELECT n FROM job_counts WHERE state = $12), 0) < $13 "
        "RETURNING seq) "
        "SELECT seq, pg_notify($14, $15) FROM ins",
        job.name(), static_cast<int>(job.state()), values.create_time_us,
        job.request_id().empty() ? nullptr : job.request_id().c_str(), record.lease_id,
        OrNull(TimeParam(values.lease_expire_us)), OrNull(TimeParam(values.run_deadline_us)),
        OrNull(TimeParam(values.state_time_us)), OrNull(TimeParam(values.stage_time_us)),
        pqxx::binarystring(values.job), record.tenant, static_cast<int>(v1::QUEUED), max_queued,
        channel_, absl::StrCat(instance_, " ", job.name()));
    if (inserted.empty()) {
      const pqxx::result counted = txn.exec_params(
          "SELECT n FROM job_counts WHERE state = $1", static_cast<int>(v1::QUEUED));
      return job_row::QueueFullError(counted.empty() ? 0 : counted[0][0].as<int64_t>());
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
      return job_row::NotFoundError(name);
    }
    ASSIGN_OR_RETURN(record, ReadRecord(rows[0]));
    return absl::OkStatus();
  }));
  return record;
}

absl::StatusOr<JobPage> PostgresJobStore::List(const JobQuery& query) {
  ASSIGN_OR_RETURN(job_row::PageBuilder page, job_row::PageBuilder::Start(query));
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
        page.below_seq(), static_cast<int>(query.state), query.label_key, query.label_value,
        page.row_limit(), query.tenant);
    for (const pqxx::row& row : rows) {
      if (!page.WantsRow()) {
        break;
      }
      int64_t seq = 0;
      ASSIGN_OR_RETURN(JobRecord record, ReadRecord(row, &seq));
      page.Add(seq, std::move(record.job));
    }
    return absl::OkStatus();
  }));
  return std::move(page).Finish();
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
  const int64_t due_us = job_row::DueByColumn(t);
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
        return job_row::NotFoundError(name);
      }
      return job_row::ChangedConcurrentlyError(name);
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
