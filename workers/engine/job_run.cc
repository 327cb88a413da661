#include "workers/engine/job_run.h"

#include <chrono>

#include "common/job_error.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobRun>> JobRun::Load(SearchOptions search,
                                                     QuantizeOptions quantize,
                                                     const ProgressFn& progress) {
  const Clock::time_point start = Clock::now();
  std::unique_ptr<JobRun> run(new JobRun());
  if (quantize.finetune == FinetuneMode::kQat && quantize.train_path.empty()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "--finetune qat trains on labelled data: pass --train FILE");
  }
  if (progress && !progress(Stage::kAnalyzing, 0, "loading the model and the data")) {
    return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled, "the job was cancelled");
  }
  ASSIGN_OR_RETURN(run->inputs_, LoadJobInputs(InputPathsOf(quantize)));
  if (run->inputs_.eval.has_value() || run->inputs_.train.has_value()) {
    if (progress && !progress(Stage::kAnalyzing, 0.2, "checking the labelled data")) {
      return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled, "the job was cancelled");
    }
    RETURN_IF_ERROR(CheckLabelledInputs(run->inputs_));
  }
  run->search_options_ = std::move(search);
  run->quantize_options_ = std::move(quantize);
  run->load_seconds_ = SecondsSince(start);
  return run;
}

absl::Status JobRun::Search(const ProgressFn& progress) {
  ASSIGN_OR_RETURN(SearchResult result, RunSearch(search_options_, inputs_, progress));
  report_ = std::move(result.report);
  nlohmann::json& timings = report_["timings_seconds"];
  timings["analyze"] = timings.value("analyze", 0.0) + load_seconds_;
  timings["total"] = timings.value("total", 0.0) + load_seconds_;
  return absl::OkStatus();
}

absl::Status JobRun::Quantize(const ProgressFn& progress) {
  if (!report_.contains("layers")) {
    return absl::FailedPreconditionError("Quantize runs after Search");
  }
  ASSIGN_OR_RETURN(files_, RunQuantization(quantize_options_, inputs_, report_, progress));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> JobRun::WriteReport() {
  ASSIGN_OR_RETURN(std::vector<std::string> written,
                   WriteArtifacts(report_, quantize_options_.out_dir));
  written.insert(written.end(), files_.begin(), files_.end());
  return written;
}

}  // namespace ompq::engine
