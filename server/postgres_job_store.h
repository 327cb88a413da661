// PostgresJobStore: the JobStore shared by several server replicas, on PostgreSQL
// (libpqxx). Same semantics as SqliteJobStore; what differs is how it stays correct with
// many writers in many processes:
//   - claiming takes the oldest QUEUED row with SELECT ... FOR UPDATE SKIP LOCKED, so
//     concurrent claimers (threads or servers) never take one job twice and never wait;
//   - Update/Delete are compare-and-set on the version column;
//   - Create serialises on a transaction-scoped advisory lock, so request_id idempotency
//     and the queue limit hold across servers;
//   - every write NOTIFYs the channel "ompq_jobs" (per schema) with the job's name, and
//     a listener thread with its own connection reports other stores' writes
//     (SetChangeListener), which is how replicas wake each other's long polls and watches.
// The schema is created and migrated at Open() (table schema_version, an ordered list of
// migrations: server/postgres_schema.h). The connection URL may carry a password: only
// RedactedUrl() is ever shown.
#ifndef OMPQ_SERVER_POSTGRES_JOB_STORE_H_
#define OMPQ_SERVER_POSTGRES_JOB_STORE_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/job_store.h"

namespace ompq {

/// `url` with any password (user:PASSWORD@ or ?password=) replaced by ***, for messages.
std::string RedactPostgresUrl(const std::string& url);

/// JobStore on a PostgreSQL database (libpqxx), safe to share between servers.
class PostgresJobStore final : public JobStore {
 public:
  /// Connects to `url` (postgresql://user[:password]@host[:port]/db[?params], as libpq
  /// reads it) and creates or migrates the schema (in the URL's search_path schema).
  static absl::StatusOr<std::unique_ptr<PostgresJobStore>> Open(const std::string& url);
  /// Stops the listener thread and closes the connections.
  ~PostgresJobStore() override;
  PostgresJobStore(const PostgresJobStore&) = delete;
  PostgresJobStore& operator=(const PostgresJobStore&) = delete;

  absl::StatusOr<CreateResult> Create(const JobRecord& record, int64_t max_queued) override;
  absl::StatusOr<JobRecord> Get(const std::string& name) override;
  absl::StatusOr<JobPage> List(const JobQuery& query) override;
  absl::StatusOr<JobRecord> Update(const JobRecord& record) override;
  absl::StatusOr<std::optional<JobRecord>> ClaimOldestQueued(
      const std::function<void(JobRecord&)>& claim) override;
  absl::StatusOr<std::vector<JobRecord>> FindLeasedDueBy(absl::Time t) override;
  absl::Status Delete(const std::string& name, int64_t version) override;
  absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState() override;
  void SetChangeListener(std::function<void(const std::string& name)> listener) override;

  /// The schema version this build creates and understands.
  static int LatestSchemaVersion();

 private:
  struct Connection;  // A pqxx::connection (kept out of this header).

  PostgresJobStore(std::string url, std::string channel);

  // A connection from the pool (or a new one); Release() gives it back.
  absl::StatusOr<std::unique_ptr<Connection>> Acquire();
  void Release(std::unique_ptr<Connection> conn, bool broken);
  // Runs `body` with a pooled connection, converting libpqxx exceptions to a Status
  // (`what` names the operation). A broken connection is dropped, not pooled.
  absl::Status Run(const char* what, const std::function<absl::Status(Connection&)>& body);
  // The listener thread: LISTEN on its own connection, reconnecting until stopped.
  void ListenLoop();
  // Hands one notification ("INSTANCE NAME") to the listener, unless it is our own.
  void Deliver(const std::string& payload);

  const std::string url_;  // With the password: never shown (redacted_url_ is).
  const std::string redacted_url_;
  const std::string channel_;   // NOTIFY channel of this schema.
  const std::string instance_;  // Tags our own notifications, which the listener skips.

  absl::Mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(pool_mu_);
  int open_ ABSL_GUARDED_BY(pool_mu_) = 0;  // Connections handed out or idle.

  // Held while the listener is called, so SetChangeListener(nullptr) waits out a call.
  absl::Mutex listener_mu_;
  std::function<void(const std::string&)> listener_ ABSL_GUARDED_BY(listener_mu_);
  bool stop_ ABSL_GUARDED_BY(listener_mu_) = false;
  bool listen_attempted_ ABSL_GUARDED_BY(listener_mu_) = false;  // First LISTEN tried.
  int wake_fds_[2] = {-1, -1};  // Self-pipe: a byte on [1] stops the listener's poll().
  std::thread listen_thread_;   // Started by the first SetChangeListener().
};

}  // namespace ompq

#endif  // OMPQ_SERVER_POSTGRES_JOB_STORE_H_
