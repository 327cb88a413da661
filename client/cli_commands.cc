#include "client/cli_commands.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/exit_codes.h"
#include "client/frontier_table.h"
#include "client/interrupt.h"
#include "client/progress_display.h"
#include "client/summary_table.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "nlohmann/json.hpp"

namespace ompq::client {
namespace {

namespace fs = std::filesystem;

bool JsonMode(const CliContext& ctx) { return ctx.output == OutputFormat::kJson; }

// Prints the error with its next step and returns the matching exit code.
int Fail(const CliContext& ctx, const absl::Status& status) {
  *ctx.err << "ompqctl: error: " << DescribeError(status, ctx.server) << std::endl;
  return ExitCodeForStatus(status);
}

// Notes for people go to stderr, and only in text mode, so JSON consumers see nothing.
void Note(const CliContext& ctx, const std::string& line) {
  if (!JsonMode(ctx)) *ctx.err << line << std::endl;
}

// Uploads one job input; `flag` names it in messages (e.g. "--calib").
absl::StatusOr<std::string> UploadInput(const CliContext& ctx, const std::string& flag,
                                        const std::string& path) {
  auto uploaded = ctx.client->UploadFile(path);
  if (!uploaded.ok()) {
    // Name the input when the server refused its bytes; connection errors stay as they
    // are, since they concern the server, not the file.
    absl::StatusCode code = uploaded.status().code();
    if (code == absl::StatusCode::kInvalidArgument ||
        code == absl::StatusCode::kResourceExhausted || code == absl::StatusCode::kDataLoss) {
      return absl::Status(code, absl::StrCat(flag, " '", path, "': ", uploaded.status().message()));
    }
    return uploaded.status();
  }
  Note(ctx, absl::StrCat(uploaded->uploaded ? "uploaded " : "already on the server: ", path, " (",
                         FormatBytes(uploaded->size_bytes), ")"));
  return uploaded->digest;
}

// Uploads what the plan needs (skipping blobs the server has) and creates the job.
absl::StatusOr<v1::Job> UploadAndCreate(const CliContext& ctx, const JobFlags& flags) {
  ASSIGN_OR_RETURN(JobPlan plan, BuildJobPlan(flags));
  // Check every local file before uploading any, so a typo costs no transfer.
  const std::vector<std::pair<std::string, std::string>> inputs = {{"MODEL", plan.model_path},
                                                                   {"--calib", plan.calib_path},
                                                                   {"--eval", plan.eval_path},
                                                                   {"--train", plan.train_path}};
  for (const auto& [flag, path] : inputs) {
    std::error_code ec;
    if (!path.empty() && !fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(absl::StrCat(flag, ": '", path,
                                              "' does not exist or is not a file; check "
                                              "the path"));
    }
  }
  ASSIGN_OR_RETURN(*plan.spec.mutable_model_digest(), UploadInput(ctx, "MODEL", plan.model_path));
  ASSIGN_OR_RETURN(*plan.spec.mutable_calib_digest(), UploadInput(ctx, "--calib", plan.calib_path));
  if (!plan.eval_path.empty()) {
    ASSIGN_OR_RETURN(*plan.spec.mutable_eval_digest(), UploadInput(ctx, "--eval", plan.eval_path));
  }
  if (!plan.train_path.empty()) {
    ASSIGN_OR_RETURN(*plan.spec.mutable_train_digest(),
                     UploadInput(ctx, "--train", plan.train_path));
  }
  return ctx.client->CreateJob(plan.spec, plan.request_id);
}

// How following a job ended, with the job as last seen.
struct Followed {
  WatchEnd end;
  v1::Job job;
};

// Watches `name` until it is terminal, `deadline` passes or Ctrl-C; shows progress on
// stderr when `show_progress`. A terminal job is re-read with GetJob so the caller has
// the full resource (result, artifacts) whatever the stream carried.
absl::StatusOr<Followed> Follow(const CliContext& ctx, const std::string& name, absl::Time deadline,
                                bool show_progress) {
  ScopedInterruptCatcher interrupt;
  ProgressDisplay display(*ctx.err, ctx.interactive);
  Followed followed{WatchEnd::kStopped, v1::Job()};
  WatchOptions options;
  options.deadline = deadline;
  options.stop = interrupt.flag();
  auto end = ctx.client->Watch(name, options, [&](const v1::Job& job) {
    followed.job = job;
    if (show_progress) display.Update(job, absl::Now());
    return true;
  });
  display.Finish();
  if (!end.ok()) return end.status();
  followed.end = *end;
  if (followed.end == WatchEnd::kTerminal) {
    ASSIGN_OR_RETURN(followed.job, ctx.client->GetJob(name));
  } else if (followed.end == WatchEnd::kTimedOut && followed.job.name().empty()) {
    // Timed out before the first update: report the job as it stands, if it answers.
    auto job = ctx.client->GetJob(name);
    if (job.ok()) followed.job = *std::move(job);
  }
  return followed;
}

// Exit path for a follow that did not reach a terminal state.
int ReportUnfinished(const CliContext& ctx, const Followed& followed, const std::string& name) {
  if (followed.end == WatchEnd::kTimedOut) {
    if (JsonMode(ctx)) *ctx.out << JobToJson(followed.job) << std::endl;
    *ctx.err << "ompqctl: timed out waiting for " << name << " (still "
             << v1::JobState_Name(followed.job.state()) << "); wait again with: ompqctl wait "
             << name << std::endl;
    return kExitTimedOut;
  }
  *ctx.err << "\njob " << name << " keeps running; reattach with: ompqctl watch " << name
           << std::endl;
  return kExitInterrupted;
}

// True for names that are safe to create inside the output folder.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && !absl::StrContains(name, '/') &&
         !absl::StrContains(name, '\\');
}

// Downloads every artifact of `job` into `out_dir`; returns the file names.
absl::StatusOr<std::vector<std::string>> DownloadArtifacts(const CliContext& ctx,
                                                           const v1::Job& job,
                                                           const std::string& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", out_dir, "': ", ec.message(), "; pass a writable --out"));
  }
  std::vector<std::string> files;
  for (const v1::Artifact& artifact : job.artifacts()) {
    if (!IsPlainFileName(artifact.name())) {
      return absl::InternalError(
          absl::StrCat("the server named an artifact '", artifact.name(), "'"));
    }
    std::string path = (fs::path(out_dir) / artifact.name()).string();
    RETURN_IF_ERROR(ctx.client->Download(artifact.digest(), artifact.size_bytes(), path));
    files.push_back(artifact.name());
  }
  return files;
}

// The failure of a terminal job on stderr; the job itself on stdout in JSON mode.
int ReportJobFailure(const CliContext& ctx, const v1::Job& job) {
  if (JsonMode(ctx)) *ctx.out << JobToJson(job) << std::endl;
  *ctx.err << "ompqctl: " << job.name() << " " << JobFailureLine(job) << std::endl;
  if (job.state() == v1::FAILED) {
    *ctx.err << "details: ompqctl get " << job.name() << "; fix the input and submit again"
             << std::endl;
  }
  return ExitCodeForJob(job);
}

}  // namespace

int RunSubmit(const CliContext& ctx, const JobFlags& flags) {
  auto job = UploadAndCreate(ctx, flags);
  if (!job.ok()) return Fail(ctx, job.status());
  if (JsonMode(ctx)) {
    *ctx.out << JobToJson(*job) << std::endl;
  } else {
    *ctx.out << job->name() << std::endl;
    Note(ctx, absl::StrCat("submitted ", job->name(), " (", v1::JobState_Name(job->state()),
                           "); follow it with: ompqctl watch ", job->name()));
  }
  return kExitSuccess;
}

int RunQuantize(const CliContext& ctx, const JobFlags& flags, const std::string& out_dir) {
  auto created = UploadAndCreate(ctx, flags);
  if (!created.ok()) return Fail(ctx, created.status());
  const std::string name = created->name();
  Note(ctx, absl::StrCat("submitted ", name));
  auto followed = Follow(ctx, name, absl::InfiniteFuture(), /*show_progress=*/true);
  if (!followed.ok()) {
    int code = Fail(ctx, followed.status());
    *ctx.err << "job " << name << " may still be running; check with: ompqctl get " << name
             << std::endl;
    return code;
  }
  if (followed->end != WatchEnd::kTerminal) return ReportUnfinished(ctx, *followed, name);
  const v1::Job& job = followed->job;
  if (job.state() != v1::SUCCEEDED) return ReportJobFailure(ctx, job);

  auto files = DownloadArtifacts(ctx, job, out_dir);
  if (!files.ok()) {
    int code = Fail(ctx, files.status());
    *ctx.err << "the job succeeded; retry the download with: ompqctl download " << name << " --out "
             << out_dir << std::endl;
    return code;
  }
  if (JsonMode(ctx)) {
    *ctx.out << JobToJson(job) << std::endl;
  } else {
    *ctx.out << FormatSummary(job, out_dir, *files);
  }
  return kExitSuccess;
}

int RunGet(const CliContext& ctx, const std::string& name) {
  auto job = ctx.client->GetJob(NormalizeJobName(name));
  if (!job.ok()) return Fail(ctx, job.status());
  if (JsonMode(ctx)) {
    *ctx.out << JobToJson(*job) << std::endl;
  } else {
    *ctx.out << JobToText(*job);
    if (job->state() == v1::SUCCEEDED) *ctx.out << "\n" << FormatSummary(*job, "", {});
  }
  return kExitSuccess;
}

int RunList(const CliContext& ctx, const ListFlags& flags) {
  if (flags.limit <= 0) {
    return Fail(ctx, absl::InvalidArgumentError("--limit must be positive"));
  }
  v1::ListJobsRequest request;
  if (!flags.state.empty()) {
    auto state = ParseJobState(flags.state);
    if (!state.ok()) return Fail(ctx, state.status());
    request.set_state(*state);
  }
  if (!flags.label.empty()) {
    auto label = ParseLabel(flags.label);
    if (!label.ok()) return Fail(ctx, label.status());
    request.set_label(flags.label);
  }
  std::vector<v1::Job> jobs;
  do {
    request.set_page_size(std::min(flags.limit - static_cast<int>(jobs.size()), 1000));
    auto page = ctx.client->ListJobs(request);
    if (!page.ok()) return Fail(ctx, page.status());
    for (const v1::Job& job : page->jobs()) {
      if (static_cast<int>(jobs.size()) < flags.limit) jobs.push_back(job);
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && static_cast<int>(jobs.size()) < flags.limit);
  *ctx.out << (JsonMode(ctx) ? JobListToJson(jobs) + "\n" : JobListToText(jobs));
  return kExitSuccess;
}

int RunWatch(const CliContext& ctx, const std::string& name_arg) {
  const std::string name = NormalizeJobName(name_arg);
  auto followed = Follow(ctx, name, absl::InfiniteFuture(), /*show_progress=*/true);
  if (!followed.ok()) return Fail(ctx, followed.status());
  if (followed->end != WatchEnd::kTerminal) return ReportUnfinished(ctx, *followed, name);
  const v1::Job& job = followed->job;
  if (job.state() != v1::SUCCEEDED) return ReportJobFailure(ctx, job);
  if (JsonMode(ctx)) {
    *ctx.out << JobToJson(job) << std::endl;
  } else {
    *ctx.out << FormatSummary(job, "", {});
    Note(ctx, absl::StrCat("get the artifacts with: ompqctl download ", name, " --out DIR"));
  }
  return kExitSuccess;
}

int RunWait(const CliContext& ctx, const std::string& name_arg, const std::string& timeout) {
  const std::string name = NormalizeJobName(name_arg);
  absl::Time deadline = absl::InfiniteFuture();
  if (!timeout.empty()) {
    auto duration = ParseDuration(timeout);
    if (!duration.ok()) {
      return Fail(ctx, absl::InvalidArgumentError(
                           absl::StrCat("--timeout: ", duration.status().message())));
    }
    deadline = absl::Now() + *duration;
  }
  auto followed = Follow(ctx, name, deadline, /*show_progress=*/false);
  if (!followed.ok()) return Fail(ctx, followed.status());
  if (followed->end != WatchEnd::kTerminal) return ReportUnfinished(ctx, *followed, name);
  const v1::Job& job = followed->job;
  if (job.state() != v1::SUCCEEDED) return ReportJobFailure(ctx, job);
  *ctx.out << (JsonMode(ctx) ? JobToJson(job) + "\n" : JobToText(job));
  return kExitSuccess;
}

int RunCancel(const CliContext& ctx, const std::string& name) {
  auto job = ctx.client->CancelJob(NormalizeJobName(name));
  if (!job.ok()) return Fail(ctx, job.status());
  if (JsonMode(ctx)) {
    *ctx.out << JobToJson(*job) << std::endl;
  } else {
    *ctx.out << job->name() << " " << v1::JobState_Name(job->state()) << std::endl;
  }
  return kExitSuccess;
}

int RunDownload(const CliContext& ctx, const std::string& name_arg, const std::string& out_dir) {
  const std::string name = NormalizeJobName(name_arg);
  auto job = ctx.client->GetJob(name);
  if (!job.ok()) return Fail(ctx, job.status());
  if (job->state() == v1::FAILED || job->state() == v1::CANCELLED) {
    *ctx.err << "ompqctl: " << name << " has no artifacts: " << JobFailureLine(*job) << std::endl;
    return kExitJobFailed;
  }
  if (job->state() != v1::SUCCEEDED) {
    return Fail(ctx, absl::FailedPreconditionError(absl::StrCat(
                         name, " is ", v1::JobState_Name(job->state()),
                         "; its artifacts exist once it succeeds: ompqctl wait ", name)));
  }
  auto files = DownloadArtifacts(ctx, *job, out_dir);
  if (!files.ok()) return Fail(ctx, files.status());
  if (JsonMode(ctx)) {
    nlohmann::json doc = {{"job", name}, {"outDir", out_dir}, {"files", *files}};
    *ctx.out << doc.dump() << std::endl;
  } else {
    *ctx.out << "downloaded " << files->size() << " files of " << name << " to " << out_dir << ": "
             << absl::StrJoin(*files, ", ") << std::endl;
  }
  return kExitSuccess;
}

int RunFrontier(const CliContext& ctx, const std::string& name_arg) {
  const std::string name = NormalizeJobName(name_arg);
  auto job = ctx.client->GetJob(name);
  if (!job.ok()) return Fail(ctx, job.status());
  if (job->state() != v1::SUCCEEDED) {
    return Fail(ctx, absl::FailedPreconditionError(absl::StrCat(
                         name, " is ", v1::JobState_Name(job->state()),
                         "; its frontier is in the report of a succeeded job")));
  }
  const v1::Artifact* report_artifact = nullptr;
  for (const v1::Artifact& artifact : job->artifacts()) {
    if (artifact.name() == "report.json") report_artifact = &artifact;
  }
  if (report_artifact == nullptr) {
    return Fail(ctx, absl::NotFoundError(absl::StrCat(name, " has no report.json artifact")));
  }
  std::error_code ec;
  const fs::path temp_dir = fs::temp_directory_path(ec);
  const fs::path path =
      (ec ? fs::path(".") : temp_dir) / absl::StrCat("ompqctl-report-", getpid(), ".json");
  absl::Status downloaded =
      ctx.client->Download(report_artifact->digest(), report_artifact->size_bytes(), path.string());
  nlohmann::json report;
  if (downloaded.ok()) {
    std::ifstream in(path);
    report = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  fs::remove(path, ec);
  if (!downloaded.ok()) return Fail(ctx, downloaded);
  if (report.is_discarded()) {
    return Fail(ctx, absl::InternalError(absl::StrCat(name, "'s report.json is not JSON")));
  }
  if (JsonMode(ctx)) {
    *ctx.out << nlohmann::json{{"job", name}, {"frontier", report.value("frontier",
                                                                         nlohmann::json::array())}}
                    .dump()
             << std::endl;
    return kExitSuccess;
  }
  absl::StatusOr<std::string> table = FormatFrontier(report);
  if (!table.ok()) return Fail(ctx, table.status());
  *ctx.out << name << " size-quality frontier (" << report["search"].value("objective", "")
           << " objective)\n"
           << *table;
  return kExitSuccess;
}

int RunUpload(const CliContext& ctx, const std::vector<std::string>& paths) {
  nlohmann::json blobs = nlohmann::json::array();
  for (const std::string& path : paths) {
    auto uploaded = ctx.client->UploadFile(path);
    if (!uploaded.ok()) return Fail(ctx, uploaded.status());
    if (JsonMode(ctx)) {
      blobs.push_back({{"path", path},
                       {"digest", uploaded->digest},
                       {"sizeBytes", uploaded->size_bytes},
                       {"uploaded", uploaded->uploaded}});
    } else {
      *ctx.out << uploaded->digest << "  " << path
               << (uploaded->uploaded ? "  (uploaded)" : "  (already on the server)") << std::endl;
    }
  }
  if (JsonMode(ctx)) *ctx.out << nlohmann::json{{"blobs", blobs}}.dump() << std::endl;
  return kExitSuccess;
}

int RunHealth(const CliContext& ctx, const std::string& service, const std::string& timeout) {
  absl::Duration limit;
  if (!absl::ParseDuration(timeout, &limit) || limit <= absl::ZeroDuration()) {
    return Fail(ctx, absl::InvalidArgumentError(absl::StrCat(
        "--timeout '", timeout, "' is not a positive duration; use e.g. 5s or 500ms")));
  }
  auto status = ctx.client->CheckHealth(service, limit);
  if (!status.ok()) return Fail(ctx, status.status());  // Unreachable, too slow: exit 4.
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  const bool serving = *status == grpc::health::v1::HealthCheckResponse::SERVING;
  if (JsonMode(ctx)) {
    *ctx.out << nlohmann::json{{"server", ctx.server}, {"service", service}, {"status", name}}.dump()
             << std::endl;
  } else {
    *ctx.out << name << std::endl;
  }
  if (!serving) {
    *ctx.err << "ompqctl: " << ctx.server << " answers " << name
             << (*status == grpc::health::v1::HealthCheckResponse::NOT_SERVING
                     ? ": it is draining (shutting down) and takes no new work"
                 : *status == grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN
                     ? absl::StrCat(": it serves no service named '", service, "'")
                     : "")
             << std::endl;
    return kExitJobFailed;
  }
  return kExitSuccess;
}

}  // namespace ompq::client
