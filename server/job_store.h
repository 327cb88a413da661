// JobStore: where jobs live. An interface so the embedded SQLite store and the
// PostgreSQL store (several server replicas) are interchangeable; the same test suite
// (tests/server/job_store_test.cc) runs against every implementation.
//
// The store knows rows, transactions and atomicity, not the job state machine: callers
// (JobManager) decide what a transition means and the store applies it atomically.
#ifndef OMPQ_SERVER_JOB_STORE_H_
#define OMPQ_SERVER_JOB_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ompq/v1/job.pb.h"

namespace ompq {

/// Tenant of jobs created without authentication, and of rows older than tenants.
inline constexpr char kDefaultTenant[] = "default";

/// One stored job: the public Job resource plus the bookkeeping clients never see.
struct JobRecord {
  v1::Job job;           // The resource (name, spec, state, ...).
  std::string tenant = kDefaultTenant;  // Owner; only its tokens see the job. Never changes.
  int64_t version = 0;   // Bumped by every write; the compare-and-set token.
  std::string lease_id;  // Lease held by a worker; empty unless RUNNING/CANCELLING.
  absl::Time lease_expire_time = absl::InfinitePast();  // Lease lapses here (when leased).
  absl::Time run_deadline = absl::InfinitePast();       // Per-job timeout (when leased).
  absl::Time state_time = absl::InfinitePast();         // Entered its current state.
  absl::Time stage_time = absl::InfinitePast();         // Entered its current stage.

  /// True while a worker holds a lease on the job.
  bool leased() const { return !lease_id.empty(); }
};

/// Filters and paging of List().
struct JobQuery {
  std::string tenant;                              // Only this tenant's jobs; empty: all.
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;  // Only this state; unspecified: all.
  std::string label_key;                           // Only jobs with this label (if set)...
  std::string label_value;                         // ...equal to this value.
  int page_size = 50;                              // At most this many jobs (> 0).
  std::string page_token;                          // From the previous page; empty: first.
};

/// One page of List(), newest first.
struct JobPage {
  std::vector<v1::Job> jobs;    // The page.
  std::string next_page_token;  // Empty on the last page.
};

/// Result of Create().
struct CreateResult {
  JobRecord record;      // The stored job: the new one, or the one created first.
  bool created = false;  // False when request_id matched an existing job.
};

/// Persistent, concurrent-safe job storage.
class JobStore {
 public:
  virtual ~JobStore() = default;

  /// Stores a new job (record.job.name set by the caller, unique). When the job's
  /// request_id is non-empty and a job of the same tenant with it exists, returns that job with created=false
  /// and stores nothing. RESOURCE_EXHAUSTED when `max_queued` jobs are already QUEUED.
  virtual absl::StatusOr<CreateResult> Create(const JobRecord& record, int64_t max_queued) = 0;

  /// The job called `name`; NOT_FOUND when absent.
  virtual absl::StatusOr<JobRecord> Get(const std::string& name) = 0;

  /// Jobs matching `query`, newest first. INVALID_ARGUMENT for a page token this store
  /// did not make.
  virtual absl::StatusOr<JobPage> List(const JobQuery& query) = 0;

  /// Compare-and-set: writes `record` if the stored version still equals record.version,
  /// and returns it with the new version. ABORTED when someone else wrote first; NOT_FOUND
  /// when the job is gone. Labels and request_id never change after Create().
  virtual absl::StatusOr<JobRecord> Update(const JobRecord& record) = 0;

  /// Atomically takes the oldest QUEUED job, applies `claim` to it (which must move it
  /// out of QUEUED) and stores it. Returns the stored job, or nullopt when none is queued.
  virtual absl::StatusOr<std::optional<JobRecord>> ClaimOldestQueued(
      const std::function<void(JobRecord&)>& claim) = 0;

  /// Leased jobs whose lease expires or whose run deadline passes at or before `t`
  /// (absl::InfiniteFuture(): every leased job).
  virtual absl::StatusOr<std::vector<JobRecord>> FindLeasedDueBy(absl::Time t) = 0;

  /// Deletes the job if its stored version equals `version` (ABORTED otherwise; NOT_FOUND
  /// when absent). The caller checks that it is terminal.
  virtual absl::Status Delete(const std::string& name, int64_t version) = 0;

  /// Number of jobs in each state (states with none are absent).
  virtual absl::StatusOr<std::map<v1::JobState, int64_t>> CountByState() = 0;

  /// For stores shared by several servers: calls `listener(name)` after another store
  /// instance (another server) changed job `name`, one call at a time from a store thread;
  /// `name` is empty when changes may have been missed (the feed reconnected): re-check
  /// everything. nullptr stops the calls; once it returns, none is running. A store
  /// nobody else can write (SQLite) never calls it.
  virtual void SetChangeListener(std::function<void(const std::string& name)> /*listener*/) {}
};

}  // namespace ompq

#endif  // OMPQ_SERVER_JOB_STORE_H_
