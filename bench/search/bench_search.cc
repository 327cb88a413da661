// bench_search: what the OMPQ search costs compared with one plain forward pass of the
// same batch (time in this process; peak memory in child processes), and compared with
// the public code's way (bench/search/public_baseline.py, run as a child process).
//
//   bench_search MODEL.pt CALIB.pt [--samples 32] [--repeats 3] [--baseline SCRIPT.py]
//                [--objective orthogonality|distortion]
//
// Memory: each measurement runs in a fresh child (this binary re-executed with --child),
// which reports its peak resident set (VmHWM) and its resident set before the work
// started (libraries loaded, nothing else); the increase is what the work itself needed.
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "workers/engine/job_run.h"
#include "workers/engine/search.h"
#include "workers/engine/tensor_io.h"
#include "workers/engine/torchscript_model.h"

namespace {

using Clock = std::chrono::steady_clock;
using ompq::engine::CalibrationData;
using ompq::engine::LoadedModel;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM").
int64_t ProcStatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      int64_t kb = 0;
      absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(
                           absl::StripAsciiWhitespace(line.substr(field.size() + 1)), "kB")),
                       &kb);
      return kb;
    }
  }
  return -1;
}

// CPU seconds (user + system, all threads) this process has used.
double CpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double Min(const std::vector<double>& values) {
  return *std::min_element(values.begin(), values.end());
}

[[noreturn]] void Die(const absl::Status& status) {
  std::cerr << "bench_search: " << status << "\n";
  std::exit(1);
}

struct Args {
  std::string model, calib, baseline, child;
  int samples = 32;
  int repeats = 3;
  int64_t size_budget = 0;
  std::string objective = "distortion";  // The service default.
};

ompq::engine::SearchOptions SearchOptionsFor(const Args& args) {
  ompq::engine::SearchOptions options;
  options.model_path = args.model;
  options.calib_path = args.calib;
  options.search_samples = args.samples;
  options.size_budget_bytes = args.size_budget;
  options.objective = args.objective == "distortion" ? ompq::engine::Objective::kDistortion
                                                     : ompq::engine::Objective::kOrthogonality;
  return options;
}

// The search as the worker runs it: the inputs loaded once by the engine's pipeline
// (engine::JobRun), then its search stages.
absl::StatusOr<nlohmann::json> SearchAsAJob(const Args& args) {
  ompq::engine::QuantizeOptions quantize;
  quantize.model_path = args.model;
  quantize.calib_path = args.calib;
  quantize.finetune = ompq::engine::FinetuneMode::kNone;
  absl::StatusOr<std::unique_ptr<ompq::engine::JobRun>> run =
      ompq::engine::JobRun::Load(SearchOptionsFor(args), quantize, nullptr);
  if (!run.ok()) return run.status();
  if (absl::Status searched = (*run)->Search(nullptr); !searched.ok()) return searched;
  return (*run)->report();
}

// A model ready to run and the batch the search would use.
std::pair<LoadedModel, torch::Tensor> LoadForForward(const Args& args) {
  absl::StatusOr<LoadedModel> model = ompq::engine::LoadTorchScriptModel(args.model, "cpu");
  if (!model.ok()) Die(model.status());
  absl::StatusOr<CalibrationData> calibration = ompq::engine::LoadCalibrationFile(args.calib);
  if (!calibration.ok()) Die(calibration.status());
  torch::Tensor inputs =
      calibration->inputs.narrow(0, 0, std::min<int64_t>(calibration->inputs.size(0), args.samples))
          .clone();
  return {std::move(*model), inputs};
}

// Child: one measured piece of work, then "base_kb peak_kb seconds" on stdout.
int RunChild(const Args& args) {
  ompq::engine::InitTorchThreads();
  const int64_t base_kb = ProcStatusKb("VmRSS");
  const Clock::time_point start = Clock::now();
  if (args.child == "forward") {
    c10::InferenceMode inference_mode;
    auto [model, inputs] = LoadForForward(args);
    model.module.forward({inputs});
  } else {
    absl::StatusOr<nlohmann::json> report = SearchAsAJob(args);
    if (!report.ok()) Die(report.status());
  }
  std::printf("%lld %lld %.6f\n", static_cast<long long>(base_kb),
              static_cast<long long>(ProcStatusKb("VmHWM")), Seconds(start));
  return 0;
}

struct ChildResult {
  double base_mib = 0, peak_mib = 0, seconds = 0;
};

std::string Quote(const std::string& text) { return "'" + text + "'"; }

std::string RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) Die(absl::InternalError("popen failed: " + command));
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  if (pclose(pipe) != 0) Die(absl::InternalError("command failed: " + command + "\n" + output));
  return output;
}

ChildResult MeasureInChild(const Args& args, const std::string& what) {
  // popen runs a shell, whose /proc/self/exe is the shell: resolve ours first.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string command =
      absl::StrCat(Quote(self), " --child ", what, " --objective ", args.objective,
                   " --samples ", args.samples, " --size ",
                   args.size_budget, " ", Quote(args.model), " ", Quote(args.calib));
  std::vector<std::string> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(RunCommand(command)), ' ', absl::SkipEmpty());
  ChildResult result;
  if (fields.size() != 3 || !absl::SimpleAtod(fields[0], &result.base_mib) ||
      !absl::SimpleAtod(fields[1], &result.peak_mib) ||
      !absl::SimpleAtod(fields[2], &result.seconds)) {
    Die(absl::InternalError("unexpected child output"));
  }
  result.base_mib /= 1024;
  result.peak_mib /= 1024;
  return result;
}

Args ParseArgs(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(absl::InvalidArgumentError(arg + " needs a value"));
      return argv[++i];
    };
    if (arg == "--samples") {
      args.samples = std::stoi(value());
    } else if (arg == "--repeats") {
      args.repeats = std::max(1, std::stoi(value()));
    } else if (arg == "--baseline") {
      args.baseline = value();
    } else if (arg == "--child") {
      args.child = value();
    } else if (arg == "--objective") {
      args.objective = value();
      if (args.objective != "orthogonality" && args.objective != "distortion") {
        Die(absl::InvalidArgumentError("--objective: use orthogonality or distortion"));
      }
    } else if (arg == "--size") {
      args.size_budget = std::stoll(value());
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    std::cerr << "usage: bench_search MODEL.pt CALIB.pt [--samples N] [--repeats R] "
                 "[--baseline public_baseline.py] [--objective orthogonality|distortion]\n";
    std::exit(2);
  }
  args.model = positional[0];
  args.calib = positional[1];
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  if (!args.child.empty()) return RunChild(args);
  ompq::engine::InitTorchThreads();

  // Budget: 6 bits per parameter on average, so the program has real choices to make.
  int64_t parameters = 0;
  {
    c10::InferenceMode inference_mode;
    torch::jit::Module module = torch::jit::load(args.model);
    for (const torch::Tensor& p : module.parameters()) parameters += p.numel();
  }
  args.size_budget = parameters * 6 / 8;

  // Time, in this process: forward passes on a loaded model, then whole searches.
  std::vector<double> forward_seconds, search_seconds, forward_cpu, search_cpu;
  double cold_forward = 0;
  nlohmann::json last_report;
  {
    c10::InferenceMode inference_mode;
    auto [model, inputs] = LoadForForward(args);
    for (int r = 0; r <= args.repeats; ++r) {
      const Clock::time_point start = Clock::now();
      const double cpu_start = CpuSeconds();
      model.module.forward({inputs});
      const double seconds = Seconds(start);
      if (r == 0) {
        cold_forward = seconds;
      } else {
        forward_seconds.push_back(seconds);
        forward_cpu.push_back(CpuSeconds() - cpu_start);
      }
    }
  }
  for (int r = 0; r < args.repeats; ++r) {
    const Clock::time_point start = Clock::now();
    const double cpu_start = CpuSeconds();
    absl::StatusOr<nlohmann::json> report = SearchAsAJob(args);
    if (!report.ok()) Die(report.status());
    search_seconds.push_back(Seconds(start));
    search_cpu.push_back(CpuSeconds() - cpu_start);
    last_report = *std::move(report);
  }
  // Other processes share this machine's cores: the minimum of several runs is the least
  // disturbed measurement; the median is shown too.
  const double forward = Min(forward_seconds);
  const double search = Min(search_seconds);

  // Peak memory, each in a fresh process.
  const ChildResult forward_memory = MeasureInChild(args, "forward");
  const ChildResult search_memory = MeasureInChild(args, "search");

  const nlohmann::json& timings = last_report["timings_seconds"];
  std::printf("model %s: %zu layers, %lld parameters, N=%d, threads=%d, budget %lld bytes\n",
              args.model.c_str(), last_report["layers"].size(), static_cast<long long>(parameters),
              args.samples, at::get_num_threads(), static_cast<long long>(args.size_budget));
  std::printf("  forward pass      min %.3f s, median %.3f s of %d warm runs; first call %.3f s\n",
              forward, Median(forward_seconds), args.repeats, cold_forward);
  std::printf("  search            min %.3f s, median %.3f s of %d runs (load to report)\n", search,
              Median(search_seconds), args.repeats);
  std::printf(
      "  time ratio        %.2fx a warm forward pass (min/min), %.2fx (median/median), "
      "%.2fx the first call\n",
      search / forward, Median(search_seconds) / Median(forward_seconds), search / cold_forward);
  std::printf(
      "  CPU time ratio    %.2fx (min CPU seconds, all threads: search %.3f s, forward "
      "%.3f s)\n",
      Min(search_cpu) / Min(forward_cpu), Min(search_cpu), Min(forward_cpu));
  std::printf("    last search     analyze %.3f s, orthogonality %.3f s, solve %.3f s\n",
              timings["analyze"].get<double>(), timings["orthogonality"].get<double>(),
              timings["solve"].get<double>());
  if (const nlohmann::json& search = last_report["search"]; search.contains("distortion_seconds")) {
    std::printf("    objective       %s: the distortion took %.3f s of the orthogonality stage "
                "(%.2fx a warm forward pass)\n",
                args.objective.c_str(), search["distortion_seconds"].get<double>(),
                search["distortion_seconds"].get<double>() / forward);
  }
  std::printf("  peak RSS forward  %.0f MiB (+%.0f MiB over the %.0f MiB at start)\n",
              forward_memory.peak_mib, forward_memory.peak_mib - forward_memory.base_mib,
              forward_memory.base_mib);
  std::printf("  peak RSS search   %.0f MiB (+%.0f MiB over the %.0f MiB at start)\n",
              search_memory.peak_mib, search_memory.peak_mib - search_memory.base_mib,
              search_memory.base_mib);
  std::printf("  memory ratio      %.2fx peak RSS, %.2fx increase over start\n",
              search_memory.peak_mib / forward_memory.peak_mib,
              (search_memory.peak_mib - search_memory.base_mib) /
                  (forward_memory.peak_mib - forward_memory.base_mib));

  if (!args.baseline.empty()) {
    const std::string output = RunCommand(
        absl::StrCat("/usr/bin/python3 ", Quote(args.baseline), " ", Quote(args.model), " ",
                     Quote(args.calib), " --samples ", args.samples, " --size ", args.size_budget));
    const nlohmann::json baseline = nlohmann::json::parse(output.substr(output.rfind("\n{") + 1));
    const double public_seconds = baseline["total_seconds"];
    std::printf(
        "  public way        %.3f s (features %.3f s, ORM %.3f s, SLSQP %.3f s), "
        "peak RSS %.0f MiB; its own forward pass %.3f s\n",
        public_seconds, baseline["features_seconds"].get<double>(),
        baseline["orm_seconds"].get<double>(), baseline["slsqp_seconds"].get<double>(),
        baseline["peak_rss_mib"].get<double>(), baseline["forward_seconds"].get<double>());
    std::printf("  search vs public  %.1fx faster, %.2fx the peak RSS\n", public_seconds / search,
                search_memory.peak_mib / baseline["peak_rss_mib"].get<double>());
  }
  return 0;
}
