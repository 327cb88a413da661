#include "workers/engine/torchscript_model.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/cuda.h>
#include <zip.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/file_sniff.h"

namespace ompq::engine {
namespace {

// Longest error text we pass on; LibTorch messages can run to pages.
constexpr size_t kMaxErrorChars = 600;
// Largest code file we scan before loading (TorchScript code files are kilobytes).
constexpr uint64_t kMaxCodeFileBytes = 64ull << 20;

// Ops that reach files, processes or the network. Names are checked exactly and by the
// fragments below, so ops added by later LibTorch releases are refused by default.
constexpr const char* kDeniedOps[] = {"aten::from_file", "aten::save", "prim::rpc_async",
                                      "prim::rpc_sync", "prim::rpc_remote"};
constexpr const char* kDeniedFragments[] = {"file",   "save",   "load",   "pickle",
                                            "socket", "system", "exec",   "process",
                                            "rpc",    "spawn",  "dlopen", "getenv"};
// How the denied ops appear in serialized TorchScript code (checked before loading,
// because torch::jit::load already runs code such as __setstate__).
constexpr const char* kDeniedCodeCalls[] = {
    "torch.from_file(", "ops.aten.from_file(", "torch.save(", "ops.aten.save(",
    "rpc_async(",       "rpc_sync(",           "rpc_remote("};

bool IsErrorLine(absl::string_view line) {
  // "RuntimeError: ...", "torch.jit.Error: ...", "ValueError: ..."
  size_t colon = line.find(": ");
  if (colon == absl::string_view::npos) return false;
  absl::string_view type = line.substr(0, colon);
  if (!absl::EndsWith(type, "Error") && !absl::EndsWith(type, "Exception")) return false;
  for (char c : type) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  }
  return true;
}

bool IsBacktraceLine(absl::string_view line) {
  return absl::StartsWith(line, "Exception raised from") || absl::StartsWith(line, "frame #");
}

absl::Status UnsupportedOp(absl::string_view op, absl::string_view where) {
  return JobFailure(absl::StatusCode::kInvalidArgument, reason::kUnsupportedOp,
                    absl::StrCat("the model calls '", op, "' (", where,
                                 "), which the safety check does not allow: only aten:: and "
                                 "prim:: ops without file, process or network access run"));
}

absl::Status CheckBlock(const torch::jit::Block* block, absl::string_view where) {
  for (const torch::jit::Node* node : block->nodes()) {
    const std::string op = node->kind().toQualString();
    if (!IsAllowedOp(op)) return UnsupportedOp(op, where);
    for (const torch::jit::Block* inner : node->blocks()) {
      RETURN_IF_ERROR(CheckBlock(inner, where));
    }
    // prim::fork and fusion groups keep their body in a subgraph attribute.
    if (node->hasAttribute(torch::jit::attr::Subgraph)) {
      RETURN_IF_ERROR(CheckBlock(node->g(torch::jit::attr::Subgraph)->block(), where));
    }
  }
  return absl::OkStatus();
}

// Refuses an archive whose code text names a denied op, before any of it runs. Opens the
// archive once: a model has hundreds of code files, and opening the archive per file (its
// central directory parsed each time) took longer than torch::jit::load itself.
absl::Status PrescanArchiveCode(const std::string& path) {
  int error_code = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> archive(
      zip_open(path.c_str(), ZIP_RDONLY, &error_code), &zip_discard);
  if (archive == nullptr) {
    return JobFailure(
        absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
        absl::StrCat("cannot open the model archive (libzip error ", error_code, ")"));
  }
  const zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  std::string code;
  for (zip_int64_t i = 0; i < count; ++i) {
    const zip_uint64_t index = static_cast<zip_uint64_t>(i);
    const char* name = zip_get_name(archive.get(), index, 0);
    if (name == nullptr) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                        "the model archive has an entry without a readable name");
    }
    const std::string entry = name;
    if (!absl::StrContains(entry, "/code/") || !absl::EndsWith(entry, ".py")) continue;
    zip_stat_t stat;
    zip_stat_init(&stat);
    if (zip_stat_index(archive.get(), index, 0, &stat) != 0 || !(stat.valid & ZIP_STAT_SIZE) ||
        stat.size > kMaxCodeFileBytes) {
      return JobFailure(
          absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
          absl::StrCat("model archive entry '", entry, "' has no size or is larger than ",
                       kMaxCodeFileBytes, " bytes"));
    }
    std::unique_ptr<zip_file_t, decltype(&zip_fclose)> file(
        zip_fopen_index(archive.get(), index, 0), &zip_fclose);
    code.assign(stat.size, '\0');
    const zip_int64_t got =
        file == nullptr ? -1 : (code.empty() ? 0 : zip_fread(file.get(), code.data(), stat.size));
    // One more read must hit the end: an entry longer than its header says is corrupt.
    char extra = 0;
    if (got < 0 || static_cast<zip_uint64_t>(got) != stat.size ||
        zip_fread(file.get(), &extra, 1) != 0) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                        absl::StrCat("model archive entry '", entry, "' is corrupt"));
    }
    for (const char* call : kDeniedCodeCalls) {
      if (absl::StrContains(code, call)) {
        return UnsupportedOp(absl::StripSuffix(call, "("), absl::StrCat("in ", entry));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

void InitTorchThreads() {
  static std::once_flag once;
  std::call_once(once, [] {
    const unsigned cores = std::thread::hardware_concurrency();
    at::set_num_threads(static_cast<int>(cores == 0 ? 1 : cores));
  });
}

std::string TorchErrorSummary(absl::string_view message) {
  std::vector<absl::string_view> lines = absl::StrSplit(message, '\n');
  // Cut C++ backtraces wherever they start.
  for (size_t i = 0; i < lines.size(); ++i) {
    if (IsBacktraceLine(lines[i])) {
      lines.resize(i);
      break;
    }
  }
  size_t first = 0;
  if (absl::StrContains(message, "operation failed in the TorchScript interpreter")) {
    // The model's own error is the last "XxxError: ..." line and what follows it.
    for (size_t i = lines.size(); i-- > 0;) {
      if (IsErrorLine(lines[i])) {
        first = i;
        break;
      }
    }
  }
  std::vector<absl::string_view> kept;
  for (size_t i = first; i < lines.size() && kept.size() < 3; ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    if (!line.empty()) kept.push_back(line);
  }
  std::string summary = absl::StrJoin(kept, " ");
  if (summary.size() > kMaxErrorChars) summary = summary.substr(0, kMaxErrorChars) + "...";
  return summary.empty() ? "unknown LibTorch error" : summary;
}

absl::Status CallTorch(absl::StatusCode code, absl::string_view reason, absl::string_view context,
                       const std::function<void()>& body) {
  try {
    body();
    return absl::OkStatus();
  } catch (const c10::Error& e) {
    return JobFailure(code, reason,
                      absl::StrCat(context, ": ", TorchErrorSummary(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return JobFailure(code, reason, absl::StrCat(context, ": ", TorchErrorSummary(e.what())));
  }
}

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  const bool cuda_available = torch::cuda::is_available();
  if (name == "auto")
    return cuda_available ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::Device device = torch::kCPU;
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInternal,
                            absl::StrCat("invalid device '", name, "'"),
                            [&] { device = torch::Device(name); }));
  if (!device.is_cpu() && !device.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", name, "' is not supported: use cpu, cuda, cuda:N or auto"));
  }
  if (device.is_cuda() &&
      (!cuda_available ||
       (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())))) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", name, "' requested but this LibTorch sees ",
                     torch::cuda::device_count(), " CUDA device(s)"));
  }
  return device;
}

bool IsAllowedOp(absl::string_view qualified_name) {
  if (!absl::StartsWith(qualified_name, "aten::") && !absl::StartsWith(qualified_name, "prim::")) {
    return false;
  }
  for (const char* denied : kDeniedOps) {
    if (qualified_name == denied) return false;
  }
  const std::string lower = absl::AsciiStrToLower(qualified_name.substr(6));
  for (const char* fragment : kDeniedFragments) {
    if (absl::StrContains(lower, fragment)) return false;
  }
  return true;
}

absl::Status CheckModelOps(const torch::jit::Module& module) {
  // Every function of the module's compilation unit (methods of all submodules and
  // classes, free functions, __setstate__) plus the module methods themselves, so no call
  // path is missed even without inlining.
  std::set<torch::jit::Function*> functions;
  for (torch::jit::Function* function : module._ivalue()->compilation_unit()->get_functions()) {
    functions.insert(function);
  }
  for (const torch::jit::Module& submodule : module.modules()) {
    for (const torch::jit::Method& method : submodule.get_methods()) {
      functions.insert(&method.function());
    }
  }
  for (torch::jit::Function* function : functions) {
    torch::jit::GraphFunction* graph_function = torch::jit::tryToGraphFunction(*function);
    if (graph_function == nullptr) continue;
    RETURN_IF_ERROR(CheckBlock(graph_function->graph()->block(),
                               absl::StrCat("in ", function->qualname().qualifiedName())));
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedModel> LoadTorchScriptModel(const std::string& path,
                                                 const std::string& device_name) {
  InitTorchThreads();
  const std::string file_name = std::filesystem::path(path).filename().string();
  ASSIGN_OR_RETURN(FileSniff sniff, SniffFile(path));
  if (sniff.kind != FileKind::kTorchScriptArchive) {
    return JobFailure(
        absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
        absl::StrCat("'", file_name, "' is not a TorchScript archive: it is ", sniff.description));
  }
  RETURN_IF_ERROR(PrescanArchiveCode(path));
  ASSIGN_OR_RETURN(torch::Device device, ResolveDevice(device_name));

  LoadedModel model;
  model.device = device;
  absl::Status loaded = CallTorch(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                                  absl::StrCat("cannot load TorchScript archive '", file_name, "'"),
                                  [&] { model.module = torch::jit::load(path, device); });
  if (!loaded.ok()) {
    // An op this LibTorch does not have (a custom op library the model was built with).
    if (absl::StrContains(loaded.message(), "Unknown builtin op")) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kUnsupportedOp,
                        loaded.message());
    }
    return loaded;
  }
  RETURN_IF_ERROR(CheckModelOps(model.module));
  // Quantization works on inference behaviour: BatchNorm running statistics, no dropout.
  // (A traced graph has its mode baked in; this only changes scripted models.)
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                            "cannot switch the model to eval mode", [&] { model.module.eval(); }));
  return model;
}

}  // namespace ompq::engine
