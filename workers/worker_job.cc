#include "workers/worker_job.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <functional>
#include <filesystem>
#include <memory>
#include <new>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/grpc_status.h"
#include "common/job_error.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "google/protobuf/util/time_util.h"
#include "rpc/blob_transfer.h"
#include "rpc/proto_time.h"
#include "workers/engine/job_run.h"
#include "workers/worker_heartbeat.h"
#include "workers/worker_mapping.h"

namespace ompq::worker {
namespace {

namespace fs = std::filesystem;

// The model's local file name: the user's own (display_name) when it is a plain file
// name, so engine messages such as "'x.pt' is not a TorchScript archive" name their file.
std::string ModelFileName(const v1::JobSpec& spec) {
  const std::string& name = spec.display_name();
  bool plain = !name.empty() && name.size() <= 200 && name != "." && name != ".." &&
               name != "calib.data" && name.find_first_of("/\\") == std::string::npos;
  return plain ? name : "model.pt";
}

// The reason of a job that ran out of memory (PRODUCT.md names no reason for it; this
// mirrors the gRPC code).
constexpr char kResourceExhausted[] = "RESOURCE_EXHAUSTED";

absl::Status OutOfMemory(const WorkerOptions& options, absl::string_view detail) {
  // LibTorch's message carries a backtrace; its allocator's own sentence is enough.
  if (size_t at = detail.find("DefaultCPUAllocator"); at != absl::string_view::npos) {
    detail.remove_prefix(at);
  }
  detail = detail.substr(0, detail.find('\n'));
  std::string limit = options.memory_limit_bytes > 0
                          ? absl::StrCat("the worker's --memory-limit of ",
                                         FormatBytes(options.memory_limit_bytes))
                          : std::string("the memory available to the worker");
  return JobFailure(absl::StatusCode::kResourceExhausted, kResourceExhausted,
                    absl::StrCat("the job ran out of memory (", detail, ") within ", limit,
                                 "; use fewer --search-samples or calibration inputs, a "
                                 "smaller model, or a worker with more memory"));
}

// LibTorch reports a failed allocation as a c10::Error, which the engine turns into a
// Status with the allocator's words; recognise them so the reason says what happened.
bool LooksLikeOutOfMemory(const absl::Status& status) {
  absl::string_view m = status.message();
  return absl::StrContains(m, "not enough memory") ||
         absl::StrContains(m, "can't allocate memory") ||
         absl::StrContains(m, "DefaultCPUAllocator") || absl::StrContains(m, "std::bad_alloc") ||
         absl::StrContains(m, "out of memory");
}

// Test hook (STYLE.md: fakes for faults). Only with OMPQ_WORKER_FAULT=crash_on_label in
// the worker's environment: a job labelled fault=crash kills this worker process with
// SIGKILL once its inputs are fetched, as a model that crashes the process would. The
// e2e tests use it for the crash-looping job; without the variable it does nothing.
bool CrashFaultRequested(const v1::Job& job) {
  const char* fault = std::getenv("OMPQ_WORKER_FAULT");
  if (fault == nullptr || absl::string_view(fault) != "crash_on_label") return false;
  auto label = job.spec().labels().find("fault");
  return label != job.spec().labels().end() && label->second == "crash";
}

// Transport failures may pass on another attempt; everything else is the job's own.
bool IsRetryable(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kAborted;
}

class LeasedJob {
 public:
  LeasedJob(const JobEnvironment& env, const v1::LeaseJobResponse& lease)
      : env_(env),
        options_(*env.options),
        job_(lease.job()),
        lease_id_(lease.lease_id()),
        heartbeat_(*env.workers, options_.connection, options_.worker_id, lease.lease_id(),
                   lease.job().name(), FromProtoDuration(lease.lease_duration()),
                   options_.heartbeat),
        progress_(JobProgress::StagesFor(lease.job().spec())),
        dir_(fs::path(options_.work_dir) / "jobs" /
             std::string(absl::StripPrefix(lease.job().name(), "jobs/"))),
        model_path_(dir_ / ModelFileName(lease.job().spec())),
        calib_path_(dir_ / "calib.data"),
        eval_path_(lease.job().spec().eval_digest().empty() ? fs::path() : dir_ / "eval.data"),
        train_path_(lease.job().spec().train_digest().empty() ? fs::path()
                                                               : dir_ / "train.data") {
    if (job_.spec().has_timeout()) deadline_ = started_ + FromProtoDuration(job_.spec().timeout());
    if (options_.job_time_limit > absl::ZeroDuration() &&
        started_ + options_.job_time_limit < deadline_) {
      deadline_ = started_ + options_.job_time_limit;
      deadline_is_worker_limit_ = true;
    }
  }

  void Run() {
    OMPQ_LOG(INFO) << "[" << options_.worker_id << "] " << job_.name() << ": started (attempt "
                   << job_.attempt() << ")";
    env_.metrics->JobStarted();
    ReportProgress(v1::FETCHING_INPUTS, 0, "fetching inputs");
    heartbeat_.Start();
    std::vector<v1::Artifact> artifacts;
    v1::JobResult result;
    absl::Status status;
    try {
      status = FetchInputs();
      if (status.ok() && CrashFaultRequested(job_)) {
        OMPQ_LOG(WARNING) << "[" << options_.worker_id << "] " << job_.name()
                          << ": OMPQ_WORKER_FAULT=crash_on_label: killing this worker";
        ::kill(::getpid(), SIGKILL);
      }
      // The inputs are loaded and checked (eval and training data against the model)
      // once, before any long work starts; the stages then run on them.
      std::unique_ptr<engine::JobRun> run;
      if (status.ok()) {
        status = Guarded("loading the inputs", [&]() -> absl::Status {
          ASSIGN_OR_RETURN(run, engine::JobRun::Load(SearchOptionsForJob(),
                                                     QuantizeOptionsForJob(), EngineProgress()));
          return absl::OkStatus();
        });
      }
      if (status.ok()) status = Guarded("search", [&] { return run->Search(EngineProgress()); });
      if (status.ok()) {
        status = Guarded("quantization", [&] { return run->Quantize(EngineProgress()); });
      }
      if (status.ok()) status = Export(*run, result, artifacts);
    } catch (const std::bad_alloc& e) {
      status = OutOfMemory(options_, e.what());
    }
    heartbeat_.Stop();
    env_.metrics->ObserveStage(stage_, absl::Now() - stage_started_);
    const char* outcome = job_result::kLost;
    if (heartbeat_.lease_lost()) {
      OMPQ_LOG(WARNING) << "[" << options_.worker_id << "] " << job_.name()
                        << ": lease lost; another attempt owns the job";
    } else if (Complete(status, result, artifacts)) {
      outcome = status.ok()                      ? job_result::kSucceeded
                : heartbeat_.cancel_requested() ? job_result::kCancelled
                : env_.abandon()                ? job_result::kAbandoned
                                                : job_result::kFailed;
    }
    env_.metrics->JobFinished(outcome, absl::Now() - started_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 private:
  // True once the job must stop early: cancelled, timed out, lease lost or abandoned.
  bool ShouldStop() const {
    return heartbeat_.cancel_requested() || heartbeat_.lease_lost() || absl::Now() >= deadline_ ||
           env_.abandon();
  }

  // Why the job stopped early, as the error to complete it with; OK when it did not.
  std::pair<absl::Status, bool> StopReason() const {
    if (heartbeat_.cancel_requested()) {
      return {JobFailure(absl::StatusCode::kCancelled, reason::kCancelled, "cancelled on request"),
              false};
    }
    if (absl::Now() >= deadline_) {
      std::string message =
          deadline_is_worker_limit_
              ? absl::StrCat("the job ran longer than worker ", options_.worker_id,
                             "'s --job-time-limit of ",
                             absl::FormatDuration(options_.job_time_limit),
                             "; use a smaller search or a worker with a longer limit")
              : absl::StrCat("the job ran longer than its time limit of ",
                             absl::FormatDuration(FromProtoDuration(job_.spec().timeout())),
                             "; raise --timeout or use a smaller search");
      return {JobFailure(absl::StatusCode::kDeadlineExceeded, reason::kDeadlineExceeded, message),
              false};
    }
    if (env_.abandon()) {
      return {JobFailure(absl::StatusCode::kUnavailable, reason::kWorkerLost,
                         absl::StrCat("worker ", options_.worker_id,
                                      " shut down before the job finished; it is retried")),
              true};
    }
    return {absl::OkStatus(), false};
  }

  void ReportProgress(v1::Stage stage, double fraction, std::string message) {
    absl::Time now = absl::Now();
    if (stage != stage_) {
      // The stage that just ended (none before the first report).
      if (stage_ != v1::STAGE_UNSPECIFIED) env_.metrics->ObserveStage(stage_, now - stage_started_);
      stage_ = stage;
      stage_started_ = now;
    }
    ProgressReport report;
    report.stage = stage;
    report.percent = progress_.Percent(stage, fraction);
    // Linear extrapolation within the stage; too noisy to show before 5%.
    if (fraction >= 0.05 && fraction < 1) {
      report.eta_seconds = absl::ToDoubleSeconds(now - stage_started_) * (1 - fraction) / fraction;
    }
    report.message = std::move(message);
    heartbeat_.Report(std::move(report));
  }

  absl::Status FetchInputs() {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot create ", dir_.string(), ": ", ec.message()));
    }
    // The engine recognises files by their bytes, so the names only need to be unique.
    std::vector<std::pair<std::string, fs::path>> inputs = {
        {job_.spec().model_digest(), model_path_}, {job_.spec().calib_digest(), calib_path_}};
    if (!eval_path_.empty()) inputs.emplace_back(job_.spec().eval_digest(), eval_path_);
    if (!train_path_.empty()) inputs.emplace_back(job_.spec().train_digest(), train_path_);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (ShouldStop()) return StopReason().first;
      ReportProgress(v1::FETCHING_INPUTS, static_cast<double>(i) / inputs.size(),
                     absl::StrCat("fetching ", inputs[i].second.filename().string()));
      RETURN_IF_ERROR(rpc::DownloadBlob(*env_.blobs, options_.connection, options_.transfer,
                                           inputs[i].first, -1, inputs[i].second.string()));
    }
    return absl::OkStatus();
  }

  // Runs an engine call, turning exceptions and allocator failures into the job's error.
  absl::Status Guarded(absl::string_view what, const std::function<absl::Status()>& body) {
    absl::Status status;
    try {
      status = body();
    } catch (const std::bad_alloc& e) {
      return OutOfMemory(options_, e.what());
    } catch (const std::exception& e) {
      // The engine reports errors as Status; this only guards the worker against a bug.
      return absl::InternalError(absl::StrCat(what, " failed: ", e.what()));
    }
    if (!status.ok() && status.code() != absl::StatusCode::kResourceExhausted &&
        LooksLikeOutOfMemory(status)) {
      return OutOfMemory(options_, status.message());
    }
    return status;
  }

  engine::SearchOptions SearchOptionsForJob() const {
    return ToSearchOptions(job_.spec(), model_path_.string(), calib_path_.string(),
                           options_.device);
  }

  engine::QuantizeOptions QuantizeOptionsForJob() const {
    return ToQuantizeOptions(job_.spec(), model_path_.string(), calib_path_.string(),
                             eval_path_.string(), train_path_.string(), options_.device,
                             (dir_ / "artifacts").string());
  }

  // The engine's progress becomes the job's; false once the job must stop.
  engine::ProgressFn EngineProgress() {
    return [this](engine::Stage stage, double fraction, const std::string& message) {
      ReportProgress(ToProtoStage(stage), fraction, message);
      return !ShouldStop();
    };
  }

  // Writes the report files beside the quantization's and uploads them all.
  absl::Status Export(engine::JobRun& run, v1::JobResult& result,
                      std::vector<v1::Artifact>& artifacts) {
    ReportProgress(v1::EXPORTING, 0, "writing artifacts");
    nlohmann::json& report = run.report();
    report["job"] = job_.name();
    if (!report["model"].is_object()) report["model"] = nlohmann::json::object();
    report["model"]["digest"] = job_.spec().model_digest();
    nlohmann::json& timings = report["timings_seconds"];
    if (!timings.is_object()) timings = nlohmann::json::object();
    // Stages that did not run this job take no time.
    for (const char* stage : {"finetune", "evaluate"}) {
      if (!timings.contains(stage)) timings[stage] = 0.0;
    }
    const fs::path out_dir = dir_ / "artifacts";
    // The engine's export (model_quantized.pt, encodings.json) plus the report files.
    const double engine_export_seconds = timings.value("export", 0.0);
    absl::Time export_start = absl::Now();
    RETURN_IF_ERROR(run.WriteReport().status());
    // Written twice so report.json records the export time it measures; the files are
    // small and the second write is as quick as the first.
    timings["export"] = engine_export_seconds + absl::ToDoubleSeconds(absl::Now() - export_start);
    timings["total"] = absl::ToDoubleSeconds(absl::Now() - started_);
    ASSIGN_OR_RETURN(std::vector<std::string> files, run.WriteReport());
    ASSIGN_OR_RETURN(result, ToJobResult(report));

    for (size_t i = 0; i < files.size(); ++i) {
      if (ShouldStop()) return StopReason().first;
      ReportProgress(v1::EXPORTING, 0.1 + 0.9 * static_cast<double>(i) / files.size(),
                     absl::StrCat("uploading ", files[i]));
      ASSIGN_OR_RETURN(rpc::UploadResult uploaded,
                       rpc::UploadFile(*env_.blobs, options_.connection, options_.transfer,
                                          (out_dir / files[i]).string()));
      v1::Artifact* artifact = &artifacts.emplace_back();
      artifact->set_name(files[i]);
      artifact->set_digest(uploaded.digest);
      artifact->set_size_bytes(uploaded.size_bytes);
    }
    ReportProgress(v1::EXPORTING, 1, "done");
    return absl::OkStatus();
  }

  // True when the server took the outcome; false when it refused it (a stale lease's
  // completion gets ABORTED) or could not be reached.
  bool Complete(const absl::Status& status, const v1::JobResult& result,
                const std::vector<v1::Artifact>& artifacts) {
    v1::CompleteJobRequest request;
    request.set_lease_id(lease_id_);
    request.set_job(job_.name());
    if (status.ok()) {
      *request.mutable_result() = result;
      for (const v1::Artifact& artifact : artifacts) *request.add_artifacts() = artifact;
    } else {
      // An early stop explains the failure better than the engine's CANCELLED.
      auto [stop_status, stop_retryable] = StopReason();
      const absl::Status& failure = stop_status.ok() ? status : stop_status;
      v1::JobError* error = request.mutable_error();
      error->set_code(StatusCodeName(failure.code()));
      error->set_reason(ReasonOf(failure));
      error->set_message(std::string(failure.message()));
      request.set_retryable(stop_status.ok() ? IsRetryable(status) : stop_retryable);
      OMPQ_LOG(WARNING) << "[" << options_.worker_id << "] " << job_.name()
                        << ": failed: " << error->reason() << ": " << error->message();
    }
    // The result is worth a few retries while the server restarts; the lease outlives
    // them, and a stale completion is refused (ABORTED) without harm.
    absl::Duration backoff = options_.initial_backoff;
    for (int attempt = 1;; ++attempt) {
      grpc::ClientContext context;
      rpc::PrepareContext(context, options_.connection, options_.rpc_timeout);
      v1::CompleteJobResponse response;
      grpc::Status sent = env_.workers->CompleteJob(&context, request, &response);
      if (sent.ok()) {
        OMPQ_LOG(INFO) << "[" << options_.worker_id << "] " << job_.name() << ": completed as "
                       << v1::JobState_Name(response.job().state());
        return true;
      }
      if (sent.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= 5) {
        OMPQ_LOG(WARNING) << "[" << options_.worker_id << "] " << job_.name()
                          << ": CompleteJob failed: "
                          << StatusCodeName(FromGrpcStatus(sent).code()) << ": "
                          << sent.error_message();
        return false;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

  const JobEnvironment& env_;
  const WorkerOptions& options_;
  const v1::Job job_;
  const std::string lease_id_;
  Heartbeat heartbeat_;
  JobProgress progress_;

  const fs::path dir_;         // work_dir/jobs/<id>: inputs and artifacts, removed after.
  const fs::path model_path_;  // Downloaded model.
  const fs::path calib_path_;  // Downloaded calibration data.
  const fs::path eval_path_;   // Downloaded eval data; empty without.
  const fs::path train_path_;  // Downloaded training data (QAT); empty without.

  const absl::Time started_ = absl::Now();
  absl::Time deadline_ = absl::InfiniteFuture();  // The job's or the worker's time limit.
  bool deadline_is_worker_limit_ = false;         // deadline_ is --job-time-limit's.
  v1::Stage stage_ = v1::STAGE_UNSPECIFIED;
  absl::Time stage_started_ = absl::Now();
};

}  // namespace

void RunLeasedJob(const JobEnvironment& env, const v1::LeaseJobResponse& lease) {
  LeasedJob(env, lease).Run();
}

}  // namespace ompq::worker
