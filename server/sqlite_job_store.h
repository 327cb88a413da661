// SqliteJobStore: the embedded JobStore, one SQLite file in WAL mode.
//
// One connection serialised by a mutex: SQLite allows one writer at a time anyway, and
// every operation here is a short indexed query. Rows keep the queried fields in indexed
// columns (state, creation order, request_id, labels) and the Job proto serialised.
#ifndef OMPQ_SERVER_SQLITE_JOB_STORE_H_
#define OMPQ_SERVER_SQLITE_JOB_STORE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

struct sqlite3;

namespace ompq {

class SqliteStatementCache;

/// JobStore on one SQLite database file.
class SqliteJobStore final : public JobStore {
 public:
  /// Opens (creating if needed) the database at `path` and its schema.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  absl::StatusOr<CreateResult> Create(const JobRecord& record, int64_t max_queued) override;
  absl::StatusOr<JobRecord> Get(const std::string& name) override;
  absl::StatusOr<JobPage> List(const JobQuery& query) override;
  absl::StatusOr<JobRecord> Update(const JobRecord& record) override;
  absl::StatusOr<std::optional<JobRecord>> ClaimOldestQueued(
      const std::function<void(JobRecord&)>& claim) override;
  absl::StatusOr<std::vector<JobRecord>> FindLeasedDueBy(absl::Time t) override;
  absl::Status Delete(const std::string& name, int64_t version) override;
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState() override;

 private:
  explicit SqliteJobStore(sqlite3* db);

  // Writes every column of `record` with version `new_version` where the stored version
  // is record.version. ABORTED/NOT_FOUND as Update().
  absl::Status WriteLocked(const JobRecord& record, int64_t new_version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<JobRecord>> GetLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  // Each SQL text is parsed and planned once, then reused (parsing and planning were
  // most of the ~20% of server CPU samples in SQLite during GetJob runs).
  std::unique_ptr<SqliteStatementCache> statements_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace ompq

#endif  // OMPQ_SERVER_SQLITE_JOB_STORE_H_
