// The TorchScript adapter: loads and checks a model, and is the one place where LibTorch
// exceptions become absl::Status (CallTorch), carrying the library's own message.
//
// Everything TorchScript-specific about *loading* lives here, so a later model format
// (torch.export) is one new adapter beside this one.
#ifndef OMPQ_WORKERS_ENGINE_TORCHSCRIPT_MODEL_H_
#define OMPQ_WORKERS_ENGINE_TORCHSCRIPT_MODEL_H_

#include <torch/script.h>

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ompq::engine {

/// Sets LibTorch's intra-op thread count to the machine's core count, once per process
/// (Debian's LibTorch starts with one thread).
void InitTorchThreads();

/// Runs `body`; an exception it throws becomes a Status with `code` and job failure
/// `reason` whose message is "<context>: <TorchErrorSummary of the exception>".
absl::Status CallTorch(absl::StatusCode code, absl::string_view reason, absl::string_view context,
                       const std::function<void()>& body);

/// The part of a LibTorch error message a user needs: for a TorchScript interpreter error
/// the final "SomethingError: ..." lines, otherwise the first lines; never a C++ backtrace.
std::string TorchErrorSummary(absl::string_view message);

/// "cpu", "cuda", "cuda:N" or "auto" (CUDA when available, else CPU).
/// INVALID_ARGUMENT for a malformed name, FAILED_PRECONDITION when CUDA is not available.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& name);

/// A model ready to run: in eval mode, on `device`, ops checked.
struct LoadedModel {
  torch::jit::Module module;
  torch::Device device = torch::kCPU;
};

/// Loads the TorchScript archive at `path` onto `device` (see ResolveDevice).
/// INVALID_MODEL (INVALID_ARGUMENT) when the file is not a TorchScript archive, saying
/// what it looks like; UNSUPPORTED_OP when its code calls an op that is not allowed or
/// that this LibTorch does not know.
absl::StatusOr<LoadedModel> LoadTorchScriptModel(const std::string& path,
                                                 const std::string& device);

/// Whether a model may call the op `qualified_name` ("aten::conv2d"): ops of the aten
/// and prim namespaces except those that reach files, processes or the network.
bool IsAllowedOp(absl::string_view qualified_name);

/// Walks every function and method graph of `module` (including nested blocks and
/// subgraphs) and refuses the first op IsAllowedOp rejects, with reason UNSUPPORTED_OP.
absl::Status CheckModelOps(const torch::jit::Module& module);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_TORCHSCRIPT_MODEL_H_
