#include "server/job_manager.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/digest.h"
#include "common/job_error.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "rpc/job_state.h"
#include "rpc/proto_time.h"
#include "server/job_validation.h"

namespace ompq {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
// Compare-and-set retries before giving up on a job written by many callers at once.
constexpr int kMaxWriteAttempts = 16;
constexpr size_t kMaxArtifacts = 64;

// Random lowercase hex; lease ids are secrets, so the bytes come from OpenSSL.
std::string RandomHex(int bytes) {
  std::string raw(static_cast<size_t>(bytes), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes) != 1) {
    // OpenSSL's generator does not fail once seeded; the OS generator backs it up.
    std::random_device device;
    for (char& c : raw) {
      c = static_cast<char>(device());
    }
  }
  return absl::BytesToHexString(raw);
}

bool IsLeasedState(v1::JobState state) { return state == v1::RUNNING || state == v1::CANCELLING; }

// Moves the job to `state` at `now`; terminal states drop the lease.
void SetState(JobRecord& record, v1::JobState state, absl::Time now) {
  record.job.set_state(state);
  record.state_time = now;
  if (IsTerminal(state)) {
    *record.job.mutable_end_time() = ToProtoTimestamp(now);
    record.job.set_eta_seconds(0);
    record.lease_id.clear();
  }
}

void SetError(JobRecord& record, const std::string& code, const std::string& reason,
              const std::string& message) {
  v1::JobError* error = record.job.mutable_error();
  error->set_code(code);
  error->set_reason(reason);
  error->set_message(message);
}

void Fail(JobRecord& record, absl::Time now, const std::string& code, const std::string& reason,
          const std::string& message) {
  SetState(record, v1::FAILED, now);
  SetError(record, code, reason, message);
}

void Cancel(JobRecord& record, absl::Time now) {
  SetState(record, v1::CANCELLED, now);
  SetError(record, "CANCELLED", reason::kCancelled, "cancelled on request");
}

// Back to the queue for another attempt; keeps attempt and start_time.
void Requeue(JobRecord& record, absl::Time now, const std::string& why) {
  SetState(record, v1::QUEUED, now);
  record.lease_id.clear();
  record.stage_time = absl::InfinitePast();
  record.job.set_stage(v1::STAGE_UNSPECIFIED);
  record.job.set_progress(0);
  record.job.set_eta_seconds(0);
  record.job.set_worker("");
  record.job.set_message(why);
}

// Another tenant's job answers exactly like a missing one (no existence leak). An empty
// `tenant` is the server itself, which sees every job.
absl::Status CheckTenant(const JobRecord& record, const std::string& tenant) {
  if (tenant.empty() || record.tenant == tenant) {
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("job '", record.job.name(), "' not found"));
}

absl::Status CheckLease(const JobRecord& record, const std::string& lease_id) {
  if (record.leased() && record.lease_id == lease_id) {
    return absl::OkStatus();
  }
  return absl::AbortedError(
      absl::StrCat("lease on ", record.job.name(), " is no longer held (the job is ",
                   v1::JobState_Name(record.job.state()),
                   "): it was requeued, cancelled or finished; stop working on it"));
}

// Worker calls name a job and a lease; a job that is gone is a stale lease too.
absl::Status CheckWorkerCall(const std::string& job, const std::string& lease_id) {
  RETURN_IF_ERROR(ValidateJobName(job, "job"));
  if (lease_id.empty()) {
    return absl::InvalidArgumentError("lease_id is required: pass the id LeaseJob returned");
  }
  return absl::OkStatus();
}

absl::Status StaleIfMissing(absl::Status status, const std::string& job) {
  if (absl::IsNotFound(status)) {
    return absl::AbortedError(absl::StrCat("job ", job, " no longer exists; stop working on it"));
  }
  return status;
}

bool ValidArtifactName(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

JobManager::JobManager(JobStore* store, const BlobStore* blobs, Metrics* metrics,
                       const Clock* clock, JobManagerOptions options)
    : store_(store), blobs_(blobs), metrics_(metrics), clock_(clock), options_(options) {}

absl::StatusOr<JobRecord> JobManager::Mutate(const std::string& name, const Mutation& mutate) {
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    ASSIGN_OR_RETURN(JobRecord record, store_->Get(name));
    const JobRecord before = record;
    const absl::Time now = clock_->Now();
    ASSIGN_OR_RETURN(bool write, mutate(record, now));
    if (!write) {
      return record;
    }
    *record.job.mutable_update_time() = ToProtoTimestamp(now);
    absl::StatusOr<JobRecord> stored = store_->Update(record);
    if (absl::IsAborted(stored.status())) {
      continue;  // Someone wrote first: re-read.
    }
    if (!stored.ok()) {
      return stored.status();
    }
    AfterWrite(before, *stored, now);
    return stored;
  }
  return absl::AbortedError(absl::StrCat("job ", name, " is changing too often; retry"));
}

void JobManager::AfterWrite(const JobRecord& before, const JobRecord& after, absl::Time now) {
  const v1::JobState from = before.job.state();
  const v1::JobState to = after.job.state();
  // A stage ends when the stage changes or the job leaves its leased states.
  const bool stage_ended = IsLeasedState(from) && before.job.stage() != v1::STAGE_UNSPECIFIED &&
                           before.stage_time != absl::InfinitePast() &&
                           (!IsLeasedState(to) || after.job.stage() != before.job.stage());
  if (stage_ended) {
    metrics_->ObserveStage(before.job.stage(), now - before.stage_time);
  }
  if (from == v1::QUEUED && to == v1::RUNNING && before.state_time != absl::InfinitePast()) {
    metrics_->ObserveQueueWait(now - before.state_time);
  }
  if (!IsTerminal(from) && IsTerminal(to)) {
    metrics_->JobFinished(to, to == v1::SUCCEEDED ? "" : after.job.error().reason());
    if (after.job.has_start_time()) {
      metrics_->ObserveJobDuration(now - FromProtoTimestamp(after.job.start_time()));
    }
  }
  notifier_.Publish(after);
}

absl::Status JobManager::CheckBlobExists(const std::string& digest, const std::string& field,
                                         const std::string& tenant) const {
  // Another tenant's blob gets the same answer as a missing one.
  if (digest.empty() ||
      (options_.per_tenant_blobs ? blobs_->IsOwner(digest, tenant) : blobs_->Exists(digest))) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      field, ": blob ", digest,
      " is not on the server; upload it first (BlobService.Write, or ompqctl upload)"));
}

absl::StatusOr<v1::Job> JobManager::CreateJob(const v1::CreateJobRequest& request,
                                              const std::string& tenant) {
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  v1::JobSpec spec = request.spec();
  RETURN_IF_ERROR(ValidateAndFillSpec(&spec));
  RETURN_IF_ERROR(CheckBlobExists(spec.model_digest(), "spec.model_digest", tenant));
  RETURN_IF_ERROR(CheckBlobExists(spec.calib_digest(), "spec.calib_digest", tenant));
  RETURN_IF_ERROR(CheckBlobExists(spec.eval_digest(), "spec.eval_digest", tenant));
  RETURN_IF_ERROR(CheckBlobExists(spec.train_digest(), "spec.train_digest", tenant));

  const absl::Time now = clock_->Now();
  JobRecord record;
  record.job.set_name(absl::StrCat("jobs/", RandomHex(8)));
  *record.job.mutable_spec() = std::move(spec);
  record.job.set_state(v1::QUEUED);
  record.job.set_request_id(request.request_id());
  *record.job.mutable_create_time() = ToProtoTimestamp(now);
  *record.job.mutable_update_time() = ToProtoTimestamp(now);
  record.state_time = now;
  record.tenant = tenant;
  ASSIGN_OR_RETURN(CreateResult result, store_->Create(record, options_.max_queued_jobs));
  if (result.created) {
    metrics_->JobSubmitted();
    notifier_.Publish(result.record);
  }
  return std::move(result.record.job);
}

absl::StatusOr<JobRecord> JobManager::GetJob(const std::string& name, const std::string& tenant) {
  RETURN_IF_ERROR(ValidateJobName(name));
  ASSIGN_OR_RETURN(JobRecord record, store_->Get(name));
  RETURN_IF_ERROR(CheckTenant(record, tenant));
  return record;
}

absl::StatusOr<v1::ListJobsResponse> JobManager::ListJobs(const v1::ListJobsRequest& request,
                                                          const std::string& tenant) {
  RETURN_IF_ERROR(ValidateListRequest(request));
  ASSIGN_OR_RETURN(LabelFilter label, ParseLabelFilter(request.label()));
  JobQuery query;
  query.state = request.state();
  query.label_key = label.key;
  query.label_value = label.value;
  query.page_size =
      request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  query.page_token = request.page_token();
  query.tenant = tenant;
  ASSIGN_OR_RETURN(JobPage page, store_->List(query));
  v1::ListJobsResponse response;
  for (auto& job : page.jobs) {
    *response.add_jobs() = std::move(job);
  }
  response.set_next_page_token(page.next_page_token);
  return response;
}

absl::StatusOr<v1::Job> JobManager::CancelJob(const std::string& name, const std::string& tenant) {
  RETURN_IF_ERROR(ValidateJobName(name));
  ASSIGN_OR_RETURN(
      JobRecord record,
      Mutate(name, [&tenant](JobRecord& r, absl::Time now) -> absl::StatusOr<bool> {
        RETURN_IF_ERROR(CheckTenant(r, tenant));
        switch (r.job.state()) {
          case v1::QUEUED:
            Cancel(r, now);
            return true;
          case v1::RUNNING:
            // The worker learns it at its next heartbeat.
            r.job.set_state(v1::CANCELLING);
            r.state_time = now;
            return true;
          case v1::CANCELLING:
            return false;
          default:
            return absl::FailedPreconditionError(absl::StrCat(
                "job ", r.job.name(), " has already finished (", v1::JobState_Name(r.job.state()),
                "); only QUEUED or RUNNING jobs can be cancelled"));
        }
      }));
  return std::move(record.job);
}

absl::Status JobManager::DeleteJob(const std::string& name, const std::string& tenant) {
  RETURN_IF_ERROR(ValidateJobName(name));
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    ASSIGN_OR_RETURN(JobRecord record, store_->Get(name));
    RETURN_IF_ERROR(CheckTenant(record, tenant));
    if (!IsTerminal(record.job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", name, " is ", v1::JobState_Name(record.job.state()),
                       "; cancel it (CancelJob) and delete it once it has finished"));
    }
    absl::Status deleted = store_->Delete(name, record.version);
    if (!absl::IsAborted(deleted)) {
      return deleted;
    }
  }
  return absl::AbortedError(absl::StrCat("job ", name, " is changing too often; retry"));
}

absl::StatusOr<std::optional<LeaseGrant>> JobManager::TryLeaseJob(const std::string& worker_id,
                                                                  const std::string& device) {
  if (!leasing_) {
    return std::nullopt;
  }
  const absl::Time now = clock_->Now();
  const std::string lease_id = RandomHex(16);
  JobRecord before;
  ASSIGN_OR_RETURN(std::optional<JobRecord> leased, store_->ClaimOldestQueued([&](JobRecord& r) {
    before = r;
    r.job.set_state(v1::RUNNING);
    r.job.set_attempt(r.job.attempt() + 1);
    if (!r.job.has_start_time()) *r.job.mutable_start_time() = ToProtoTimestamp(now);
    *r.job.mutable_update_time() = ToProtoTimestamp(now);
    r.job.set_worker(worker_id);
    r.job.set_stage(v1::STAGE_UNSPECIFIED);
    r.job.set_progress(0);
    r.job.set_eta_seconds(0);
    r.job.set_message(device.empty() ? "" : absl::StrCat("leased on ", device));
    r.lease_id = lease_id;
    r.lease_expire_time = now + options_.lease_timeout;
    const absl::Duration limit = r.job.spec().has_timeout()
                                     ? FromProtoDuration(r.job.spec().timeout())
                                     : options_.default_job_timeout;
    r.run_deadline = now + limit;
    r.state_time = now;
    r.stage_time = now;
  }));
  if (!leased.has_value()) {
    return std::nullopt;
  }
  AfterWrite(before, *leased, now);
  return LeaseGrant{std::move(leased->job), lease_id, options_.lease_timeout};
}

absl::StatusOr<v1::HeartbeatResponse> JobManager::Heartbeat(const v1::HeartbeatRequest& request) {
  RETURN_IF_ERROR(CheckWorkerCall(request.job(), request.lease_id()));
  if (!v1::Stage_IsValid(request.stage())) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage ", static_cast<int>(request.stage()), " is not a known stage"));
  }
  if (!std::isfinite(request.progress()) || !std::isfinite(request.eta_seconds())) {
    return absl::InvalidArgumentError("progress and eta_seconds must be finite numbers");
  }
  bool timed_out = false;
  absl::StatusOr<JobRecord> record =
      Mutate(request.job(), [&](JobRecord& r, absl::Time now) -> absl::StatusOr<bool> {
        timed_out = false;
        RETURN_IF_ERROR(CheckLease(r, request.lease_id()));
        if (now >= r.run_deadline) {
          timed_out = true;
          if (r.job.state() == v1::CANCELLING) {
            Cancel(r, now);
          } else {
            Fail(r, now, "DEADLINE_EXCEEDED", reason::kDeadlineExceeded,
                 absl::StrCat("the job exceeded its time limit on attempt ", r.job.attempt(),
                              "; raise it with --timeout"));
          }
          return true;
        }
        if (request.stage() != r.job.stage()) {
          r.job.set_stage(request.stage());
          r.stage_time = now;
        }
        r.job.set_progress(std::clamp(request.progress(), 0.0, 100.0));
        r.job.set_eta_seconds(std::max(request.eta_seconds(), 0.0));
        r.job.set_message(request.message().substr(0, 1024));
        r.lease_expire_time = now + options_.lease_timeout;
        return true;
      });
  if (!record.ok()) {
    return StaleIfMissing(record.status(), request.job());
  }
  if (timed_out) {
    return absl::AbortedError(
        absl::StrCat("job ", request.job(), " exceeded its time limit and has ended; stop"));
  }
  v1::HeartbeatResponse response;
  response.set_cancel_requested(record->job.state() == v1::CANCELLING);
  *response.mutable_lease_duration() = ToProtoDuration(options_.lease_timeout);
  return response;
}

absl::StatusOr<v1::Job> JobManager::CompleteJob(const v1::CompleteJobRequest& request) {
  RETURN_IF_ERROR(CheckWorkerCall(request.job(), request.lease_id()));
  const bool success = !request.has_error();
  if (success) {
    if (request.artifacts_size() > static_cast<int>(kMaxArtifacts)) {
      return absl::InvalidArgumentError(
          absl::StrCat("at most ", kMaxArtifacts, " artifacts may be attached"));
    }
    std::set<std::string> names;
    for (const v1::Artifact& artifact : request.artifacts()) {
      if (!ValidArtifactName(artifact.name()) || !names.insert(artifact.name()).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "artifact name '", artifact.name(),
            "' is not valid: use a unique plain file name of letters, digits, '.', '_', '-'"));
      }
      if (!IsValidDigest(artifact.digest())) {
        return absl::InvalidArgumentError(absl::StrCat("artifact ", artifact.name(), ": digest '",
                                                       artifact.digest(), "' is not valid"));
      }
      absl::StatusOr<int64_t> size = blobs_->Size(artifact.digest());
      if (!size.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("artifact ", artifact.name(), ": blob ", artifact.digest(),
                         " is not on the server; upload it before CompleteJob"));
      }
      if (*size != artifact.size_bytes()) {
        return absl::InvalidArgumentError(absl::StrCat("artifact ", artifact.name(),
                                                       ": size_bytes ", artifact.size_bytes(),
                                                       " but the blob has ", *size, " bytes"));
      }
    }
  }
  if (success && options_.per_tenant_blobs && request.artifacts_size() > 0) {
    // The job's tenant may download what its job produced. Recorded before the job turns
    // SUCCEEDED, so a client never sees an artifact it cannot read.
    ASSIGN_OR_RETURN(JobRecord current, store_->Get(request.job()));
    RETURN_IF_ERROR(CheckLease(current, request.lease_id()));
    for (const v1::Artifact& artifact : request.artifacts()) {
      RETURN_IF_ERROR(blobs_->AddOwner(artifact.digest(), current.tenant));
    }
  }
  absl::StatusOr<JobRecord> record =
      Mutate(request.job(), [&](JobRecord& r, absl::Time now) -> absl::StatusOr<bool> {
        RETURN_IF_ERROR(CheckLease(r, request.lease_id()));
        if (r.job.state() == v1::CANCELLING) {
          Cancel(r, now);
          return true;
        }
        if (success) {
          SetState(r, v1::SUCCEEDED, now);
          r.job.clear_error();
          *r.job.mutable_result() = request.result();
          *r.job.mutable_artifacts() = request.artifacts();
          r.job.set_progress(100);
          return true;
        }
        const v1::JobError& error = request.error();
        const std::string code = error.code().empty() ? "INTERNAL" : error.code();
        const std::string why = error.reason().empty() ? reason::kInternal : error.reason();
        const std::string message = error.message().empty()
                                        ? "the worker reported a failure without a message"
                                        : error.message();
        if (request.retryable() && r.job.attempt() < options_.max_attempts) {
          Requeue(r, now,
                  absl::StrCat("attempt ", r.job.attempt(), " failed (", why, ": ", message,
                               "); retrying"));
        } else {
          Fail(r, now, code, why, message);
        }
        return true;
      });
  if (!record.ok()) {
    return StaleIfMissing(record.status(), request.job());
  }
  return std::move(record->job);
}

absl::StatusOr<int> JobManager::ReapOverdueJobs() {
  const absl::Time now = clock_->Now();
  ASSIGN_OR_RETURN(std::vector<JobRecord> due, store_->FindLeasedDueBy(now));
  int changed = 0;
  for (const JobRecord& candidate : due) {
    bool lease_lapsed = false;
    bool acted = false;
    absl::StatusOr<JobRecord> record =
        Mutate(candidate.job.name(), [&](JobRecord& r, absl::Time at) -> absl::StatusOr<bool> {
          lease_lapsed = false;
          acted = false;
          if (!r.leased()) {
            return false;  // Finished meanwhile.
          }
          if (at >= r.run_deadline) {
            acted = true;
            if (r.job.state() == v1::CANCELLING) {
              Cancel(r, at);
            } else {
              Fail(r, at, "DEADLINE_EXCEEDED", reason::kDeadlineExceeded,
                   absl::StrCat("the job exceeded its time limit on attempt ", r.job.attempt(),
                                "; raise it with --timeout"));
            }
            return true;
          }
          if (at < r.lease_expire_time) {
            return false;  // Heartbeat arrived meanwhile.
          }
          lease_lapsed = true;
          acted = true;
          if (r.job.state() == v1::CANCELLING) {
            Cancel(r, at);
          } else if (r.job.attempt() < options_.max_attempts) {
            Requeue(r, at,
                    absl::StrCat("worker ", r.job.worker(), " stopped responding on attempt ",
                                 r.job.attempt(), "; requeued"));
          } else {
            Fail(r, at, "UNAVAILABLE", reason::kWorkerLost,
                 absl::StrCat("the worker stopped responding on each of ", r.job.attempt(),
                              " attempts; the model may crash or exhaust the worker (see its "
                              "log)"));
          }
          return true;
        });
    if (!record.ok()) {
      OMPQ_LOG(WARNING) << "cannot expire " << candidate.job.name() << ": "
                        << record.status().ToString();
      continue;
    }
    if (!acted) {
      continue;
    }
    ++changed;
    if (lease_lapsed) {
      metrics_->LeaseExpired();
    }
    OMPQ_LOG(INFO) << record->job.name() << " -> " << v1::JobState_Name(record->job.state())
                   << (lease_lapsed ? " (lease lapsed)" : " (time limit)");
  }
  return changed;
}

absl::StatusOr<int> JobManager::RequeueJobsOfWorkers(const std::set<std::string>& worker_ids) {
  ASSIGN_OR_RETURN(std::vector<JobRecord> leased, store_->FindLeasedDueBy(absl::InfiniteFuture()));
  int changed = 0;
  for (const JobRecord& candidate : leased) {
    if (worker_ids.count(candidate.job.worker()) == 0) {
      continue;
    }
    bool acted = false;
    absl::StatusOr<JobRecord> record =
        Mutate(candidate.job.name(), [&](JobRecord& r, absl::Time now) -> absl::StatusOr<bool> {
          acted = false;
          if (!r.leased() || r.lease_id != candidate.lease_id) {
            return false;
          }
          acted = true;
          if (r.job.state() == v1::CANCELLING) {
            Cancel(r, now);
          } else {
            // The server stopped the worker, no fault of the job: requeue whatever the
            // attempt count (max attempts is only checked when a worker is lost or fails).
            Requeue(r, now, "the server shut down while the job ran; requeued");
          }
          return true;
        });
    if (!record.ok()) {
      OMPQ_LOG(WARNING) << "cannot requeue " << candidate.job.name() << ": "
                        << record.status().ToString();
      continue;
    }
    if (acted) {
      ++changed;
    }
  }
  return changed;
}

absl::Status JobManager::RefreshMetrics(int64_t idle_workers) {
  ASSIGN_OR_RETURN(auto counts, store_->CountByState());
  metrics_->SetJobCounts(counts);
  metrics_->SetWorkers(idle_workers, counts[v1::RUNNING] + counts[v1::CANCELLING]);
  return absl::OkStatus();
}

}  // namespace ompq
