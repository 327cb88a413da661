#include "server/sqlite_job_store.h"

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/job_row_codec.h"

namespace ompq {
namespace {

// Bumped with every schema change; Open() migrates older files forward.
constexpr int kSchemaVersion = 3;

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order: newest first = seq DESC
  name TEXT NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  create_time_us INTEGER NOT NULL,
  request_id TEXT,                        -- NULL when none was given
  tenant TEXT NOT NULL DEFAULT 'default', -- owner (schema version 2)
  version INTEGER NOT NULL,
  lease_id TEXT NOT NULL DEFAULT '',
  lease_expire_us INTEGER,                -- NULL unless leased
  run_deadline_us INTEGER,                -- NULL unless leased
  state_time_us INTEGER,
  stage_time_us INTEGER,
  job BLOB NOT NULL                       -- serialised ompq.v1.Job
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_tenant_request_id ON jobs(tenant, request_id)
  WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs(tenant, seq);
CREATE INDEX IF NOT EXISTS jobs_by_create_time ON jobs(create_time_us);
CREATE INDEX IF NOT EXISTS jobs_by_lease_expire ON jobs(lease_expire_us)
  WHERE lease_expire_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_run_deadline ON jobs(run_deadline_us)
  WHERE run_deadline_us IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_labels (
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  job_seq INTEGER NOT NULL,
  PRIMARY KEY (key, value, job_seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_labels_by_job ON job_labels(job_seq);
-- Jobs per state, kept by triggers (schema version 3): CreateJob checks the queue limit
-- and the metrics read the gauges without counting every row (a COUNT(*) over 30,000
-- queued jobs cost more than the rest of a CreateJob).
CREATE TABLE IF NOT EXISTS job_counts (
  state INTEGER PRIMARY KEY,
  n INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs
  WHEN OLD.state != NEW.state BEGIN
  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
  INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
)sql";

using job_row::kRecordColumns;

absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  const int code = sqlite3_errcode(db);
  std::string message = absl::StrCat("job database: ", what, ": ", sqlite3_errmsg(db));
  // A locked database is transient: callers may retry.
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

// Prepared statements by SQL text, used only under SqliteJobStore::mu_.
class SqliteStatementCache {
 public:
  explicit SqliteStatementCache(sqlite3* db) : db_(db) {}
  ~SqliteStatementCache() {
    for (auto& [sql, entry] : entries_) {
      sqlite3_finalize(entry.stmt);
    }
  }
  SqliteStatementCache(const SqliteStatementCache&) = delete;
  SqliteStatementCache& operator=(const SqliteStatementCache&) = delete;

  // The statement for `sql`, ready to bind; null when it cannot be prepared or is in use
  // already (the caller then prepares a statement of its own).
  sqlite3_stmt* Acquire(const std::string& sql) {
    auto it = entries_.find(sql);
    if (it == entries_.end()) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) !=
          SQLITE_OK) {
        sqlite3_finalize(stmt);
        return nullptr;
      }
      it = entries_.emplace(sql, Entry{stmt, false}).first;
    }
    if (it->second.in_use) {
      return nullptr;
    }
    it->second.in_use = true;
    return it->second.stmt;
  }

  // Returns a statement from Acquire(), reset and unbound for the next use.
  void Release(sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    for (auto& [sql, entry] : entries_) {
      if (entry.stmt == stmt) {
        entry.in_use = false;
        return;
      }
    }
  }

 private:
  struct Entry {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  sqlite3* const db_;
  std::unordered_map<std::string, Entry> entries_;
};

namespace {

// A prepared statement: taken from `cache` when one is given and free, else prepared
// here; finalised (or returned to the cache) on destruction.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, SqliteStatementCache* cache = nullptr) : db_(db) {
    if (cache != nullptr && (stmt_ = cache->Acquire(sql)) != nullptr) {
      cache_ = cache;
      return;
    }
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) {
      status_ = SqliteError(db, "prepare");
    }
  }
  ~Statement() {
    if (cache_ != nullptr) {
      cache_->Release(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  const absl::Status& status() const { return status_; }

  void Bind(int index, int64_t value) { sqlite3_bind_int64(stmt_, index, value); }
  void BindText(int index, absl::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int index, const std::string& bytes) {
    sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void BindNull(int index) { sqlite3_bind_null(stmt_, index); }
  // A time column (job_row::TimeColumn): NULL when unset.
  void BindMicros(int index, const std::optional<int64_t>& micros) {
    if (micros.has_value()) {
      Bind(index, *micros);
    } else {
      BindNull(index);
    }
  }

  // Runs one step: true when a row is available, false when done.
  absl::StatusOr<bool> Step() {
    RETURN_IF_ERROR(status_);
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) {
      return true;
    }
    if (rc == SQLITE_DONE) {
      return false;
    }
    return SqliteError(db_, "step");
  }

  int64_t Int(int col) { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  // Valid until the next Step().
  absl::string_view Text(int col) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return text == nullptr ? absl::string_view()
                           : absl::string_view(text, sqlite3_column_bytes(stmt_, col));
  }
  std::optional<int64_t> Micros(int col) {
    return IsNull(col) ? std::nullopt : std::optional<int64_t>(Int(col));
  }
  absl::string_view Blob(int col) {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return absl::string_view(data, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  SqliteStatementCache* cache_ = nullptr;  // Set when stmt_ belongs to it.
  absl::Status status_;
};

absl::Status Exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : "unknown error";
    sqlite3_free(error);
    return absl::InternalError(absl::StrCat("job database: ", message));
  }
  return absl::OkStatus();
}

// BEGIN IMMEDIATE ... COMMIT; rolls back unless Commit() succeeded.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    // IMMEDIATE takes the write lock up front, so read-then-write cannot deadlock.
    status_ = Exec(db, "BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (status_.ok() && !committed_) {
      Exec(db_, "ROLLBACK").IgnoreError();
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  const absl::Status& status() const { return status_; }
  absl::Status Commit() {
    RETURN_IF_ERROR(Exec(db_, "COMMIT"));
    committed_ = true;
    return absl::OkStatus();
  }

 private:
  sqlite3* db_;
  absl::Status status_;
  bool committed_ = false;
};

// Binds what both Create() and Update() write, from parameter `first` on: lease_id,
// lease_expire_us, run_deadline_us, state_time_us, stage_time_us and job.
void BindWrittenColumns(Statement& stmt, int first, const JobRecord& record,
                        const job_row::RowValues& values) {
  stmt.BindText(first, record.lease_id);
  stmt.BindMicros(first + 1, values.lease_expire_us);
  stmt.BindMicros(first + 2, values.run_deadline_us);
  stmt.BindMicros(first + 3, values.state_time_us);
  stmt.BindMicros(first + 4, values.stage_time_us);
  stmt.BindBlob(first + 5, values.job);
}

// Reads the kRecordColumns of the current row; also returns seq.
absl::StatusOr<JobRecord> ReadRecord(Statement& stmt, int64_t* seq = nullptr) {
  return job_row::DecodeRecord(
      {stmt.Int(0), stmt.Int(1), stmt.Text(2), stmt.Micros(3), stmt.Micros(4), stmt.Micros(5),
       stmt.Micros(6), stmt.Blob(7), stmt.Text(8)},
      seq);
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open job database '", path, "': ", message));
  }
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db));
  // Another process (e.g. the sqlite3 shell) may hold a lock for a moment.
  sqlite3_busy_timeout(db, 5000);
  {
    Statement wal(db, "PRAGMA journal_mode=WAL");
    ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || wal.Text(0) != "wal") {
      return absl::FailedPreconditionError(absl::StrCat(
          "job database '", path, "' cannot use WAL mode (is it on a network filesystem?)"));
    }
  }
  // NORMAL in WAL mode survives a crash of this process (the SIGKILL case); only an OS
  // crash or power loss may drop the last commits.
  RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous=NORMAL"));
  int64_t found = 0;
  {
    Statement version(db, "PRAGMA user_version");
    ASSIGN_OR_RETURN(bool row, version.Step());
    found = row ? version.Int(0) : 0;
    if (found > kSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("job database '", path, "' has schema version ", found,
                       ", newer than this server's ", kSchemaVersion, ": upgrade the server"));
    }
    if (found == 1) {
      // 1 -> 2: jobs get a tenant (existing rows: the default one), and request_id is
      // unique per tenant. kSchema below creates the new indexes.
      Transaction txn(db);
      RETURN_IF_ERROR(txn.status());
      RETURN_IF_ERROR(Exec(db,
                           "ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';"
                           "DROP INDEX IF EXISTS jobs_by_request_id;"));
      RETURN_IF_ERROR(txn.Commit());
    }
  }
  // Schema, the counts of files older than version 3 (recounted: idempotent, so an
  // interrupted migration is simply redone) and the version, all or nothing.
  Transaction txn(db);
  RETURN_IF_ERROR(txn.status());
  RETURN_IF_ERROR(Exec(db, kSchema));
  if (found < 3) {
    RETURN_IF_ERROR(Exec(db,
                         "DELETE FROM job_counts;"
                         "INSERT INTO job_counts (state, n) "
                         "SELECT state, COUNT(*) FROM jobs GROUP BY state;"));
  }
  RETURN_IF_ERROR(Exec(db, absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str()));
  RETURN_IF_ERROR(txn.Commit());
  return store;
}

SqliteJobStore::SqliteJobStore(sqlite3* db)
    : db_(db), statements_(std::make_unique<SqliteStatementCache>(db)) {}

SqliteJobStore::~SqliteJobStore() {
  statements_.reset();  // sqlite3_close() refuses while statements are not finalised.
  sqlite3_close(db_);
}

absl::StatusOr<std::optional<JobRecord>> SqliteJobStore::GetLocked(const std::string& name) {
  Statement stmt(db_, absl::StrCat("SELECT ", kRecordColumns, " FROM jobs WHERE name = ?1"),
                 statements_.get());
  stmt.BindText(1, name);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) {
    return std::nullopt;
  }
  ASSIGN_OR_RETURN(JobRecord record, ReadRecord(stmt));
  return record;
}

absl::StatusOr<CreateResult> SqliteJobStore::Create(const JobRecord& record, int64_t max_queued) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.status());
  const v1::Job& job = record.job;
  if (!job.request_id().empty()) {
    Statement find(
        db_,
        absl::StrCat("SELECT ", kRecordColumns, " FROM jobs WHERE request_id = ?1 AND tenant = ?2"),
        statements_.get());
    find.BindText(1, job.request_id());
    find.BindText(2, record.tenant);
    ASSIGN_OR_RETURN(bool row, find.Step());
    if (row) {
      ASSIGN_OR_RETURN(JobRecord existing, ReadRecord(find));
      return CreateResult{std::move(existing), false};
    }
  }
  {
    Statement count(db_, "SELECT n FROM job_counts WHERE state = ?1", statements_.get());
    count.Bind(1, v1::QUEUED);
    ASSIGN_OR_RETURN(bool row, count.Step());
    const int64_t queued = row ? count.Int(0) : 0;
    if (queued >= max_queued) {
      return job_row::QueueFullError(queued);
    }
  }
  Statement insert(db_,
                   "INSERT INTO jobs (name, state, create_time_us, request_id, version, "
                   "lease_id, lease_expire_us, run_deadline_us, state_time_us, stage_time_us, "
                   "job, tenant) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                   statements_.get());
  const job_row::RowValues values = job_row::EncodeRecord(record);
  insert.BindText(1, job.name());
  insert.Bind(2, job.state());
  insert.Bind(3, values.create_time_us);
  if (job.request_id().empty()) {
    insert.BindNull(4);
  } else {
    insert.BindText(4, job.request_id());
  }
  BindWrittenColumns(insert, 5, record, values);
  insert.BindText(11, record.tenant);
  RETURN_IF_ERROR(insert.Step().status());
  const int64_t seq = sqlite3_last_insert_rowid(db_);
  for (const auto& [key, value] : job.spec().labels()) {
    Statement label(db_, "INSERT INTO job_labels (key, value, job_seq) VALUES (?1, ?2, ?3)",
                    statements_.get());
    label.BindText(1, key);
    label.BindText(2, value);
    label.Bind(3, seq);
    RETURN_IF_ERROR(label.Step().status());
  }
  RETURN_IF_ERROR(txn.Commit());
  CreateResult result{record, true};
  result.record.version = 1;
  return result;
}

absl::StatusOr<JobRecord> SqliteJobStore::Get(const std::string& name) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::optional<JobRecord> record, GetLocked(name));
  if (!record.has_value()) {
    return job_row::NotFoundError(name);
  }
  return *std::move(record);
}

absl::StatusOr<JobPage> SqliteJobStore::List(const JobQuery& query) {
  ASSIGN_OR_RETURN(job_row::PageBuilder page, job_row::PageBuilder::Start(query));
  std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM jobs WHERE seq < ?1");
  if (query.state != v1::JOB_STATE_UNSPECIFIED) {
    absl::StrAppend(&sql, " AND state = ?2");
  }
  if (!query.label_key.empty()) {
    absl::StrAppend(&sql,
                    " AND seq IN (SELECT job_seq FROM job_labels WHERE key = ?3 AND value = ?4)");
  }
  if (!query.tenant.empty()) {
    absl::StrAppend(&sql, " AND tenant = ?6");
  }
  // One extra row tells whether another page follows.
  absl::StrAppend(&sql, " ORDER BY seq DESC LIMIT ?5");

  absl::MutexLock lock(&mu_);
  Statement stmt(db_, sql, statements_.get());
  stmt.Bind(1, page.below_seq());
  if (query.state != v1::JOB_STATE_UNSPECIFIED) {
    stmt.Bind(2, query.state);
  }
  if (!query.label_key.empty()) {
    stmt.BindText(3, query.label_key);
    stmt.BindText(4, query.label_value);
  }
  stmt.Bind(5, page.row_limit());
  if (!query.tenant.empty()) {
    stmt.BindText(6, query.tenant);
  }
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row || !page.WantsRow()) {
      break;
    }
    int64_t seq = 0;
    ASSIGN_OR_RETURN(JobRecord record, ReadRecord(stmt, &seq));
    page.Add(seq, std::move(record.job));
  }
  return std::move(page).Finish();
}

absl::Status SqliteJobStore::WriteLocked(const JobRecord& record, int64_t new_version) {
  Statement update(db_,
                   "UPDATE jobs SET state = ?1, version = ?2, lease_id = ?3, "
                   "lease_expire_us = ?4, run_deadline_us = ?5, state_time_us = ?6, "
                   "stage_time_us = ?7, job = ?8 WHERE name = ?9 AND version = ?10",
                   statements_.get());
  update.Bind(1, record.job.state());
  update.Bind(2, new_version);
  BindWrittenColumns(update, 3, record, job_row::EncodeRecord(record));
  update.BindText(9, record.job.name());
  update.Bind(10, record.version);
  RETURN_IF_ERROR(update.Step().status());
  if (sqlite3_changes(db_) == 1) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::optional<JobRecord> current, GetLocked(record.job.name()));
  if (!current.has_value()) {
    return job_row::NotFoundError(record.job.name());
  }
  return job_row::ChangedConcurrentlyError(record.job.name());
}

absl::StatusOr<JobRecord> SqliteJobStore::Update(const JobRecord& record) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(WriteLocked(record, record.version + 1));
  JobRecord stored = record;
  stored.version = record.version + 1;
  return stored;
}

absl::StatusOr<std::optional<JobRecord>> SqliteJobStore::ClaimOldestQueued(
    const std::function<void(JobRecord&)>& claim) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.status());
  Statement oldest(
      db_,
      absl::StrCat("SELECT ", kRecordColumns, " FROM jobs WHERE state = ?1 ORDER BY seq LIMIT 1"),
      statements_.get());
  oldest.Bind(1, v1::QUEUED);
  ASSIGN_OR_RETURN(bool row, oldest.Step());
  if (!row) {
    return std::nullopt;
  }
  ASSIGN_OR_RETURN(JobRecord record, ReadRecord(oldest));
  claim(record);
  RETURN_IF_ERROR(WriteLocked(record, record.version + 1));
  RETURN_IF_ERROR(txn.Commit());
  record.version += 1;
  return record;
}

absl::StatusOr<std::vector<JobRecord>> SqliteJobStore::FindLeasedDueBy(absl::Time t) {
  absl::MutexLock lock(&mu_);
  Statement stmt(db_,
                 absl::StrCat("SELECT ", kRecordColumns,
                              " FROM jobs WHERE lease_id != '' AND "
                              "(lease_expire_us <= ?1 OR run_deadline_us <= ?1) "
                              // "+seq": sorting the few rows found lets SQLite use
                              // the two partial indexes instead of scanning every
                              // job in seq order (once a second, under mu_).
                              "ORDER BY +seq"),
                 statements_.get());
  stmt.Bind(1, job_row::DueByColumn(t));
  std::vector<JobRecord> due;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) {
      break;
    }
    ASSIGN_OR_RETURN(JobRecord record, ReadRecord(stmt));
    due.push_back(std::move(record));
  }
  return due;
}

absl::Status SqliteJobStore::Delete(const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  RETURN_IF_ERROR(txn.status());
  Statement find(db_, "SELECT seq, version FROM jobs WHERE name = ?1", statements_.get());
  find.BindText(1, name);
  ASSIGN_OR_RETURN(bool row, find.Step());
  if (!row) {
    return job_row::NotFoundError(name);
  }
  const int64_t seq = find.Int(0);
  if (find.Int(1) != version) {
    return job_row::ChangedConcurrentlyError(name);
  }
  Statement labels(db_, "DELETE FROM job_labels WHERE job_seq = ?1", statements_.get());
  labels.Bind(1, seq);
  RETURN_IF_ERROR(labels.Step().status());
  Statement job(db_, "DELETE FROM jobs WHERE seq = ?1", statements_.get());
  job.Bind(1, seq);
  RETURN_IF_ERROR(job.Step().status());
  return txn.Commit();
}

absl::StatusOr<std::map<v1::JobState, int64_t>> SqliteJobStore::CountByState() {
  absl::MutexLock lock(&mu_);
  Statement stmt(db_, "SELECT state, n FROM job_counts WHERE n > 0", statements_.get());
  std::map<v1::JobState, int64_t> counts;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) {
      break;
    }
    counts[static_cast<v1::JobState>(stmt.Int(0))] = stmt.Int(1);
  }
  return counts;
}

}  // namespace ompq
