// The one instrumented-model mechanism of the engine. The model's forward graph is copied,
// inlined and its static ifs folded (each layer call appears once); every layer call site
// is found by graph_layers.h; and hook ops are spliced in at the points asked for:
//
//   input   ompq::act_probe(x, session, site) -> Tensor    before the layer op's input
//   weight  ompq::weight_probe(w, session, site) -> Tensor before its weight
//   output  ompq::tap(y, session, site) -> y (aliased)      after its output, or after the
//           BatchNorm that alone consumes it (the value a BN-folded layer produces)
//
// The ops find the model's SiteHooks through one registry keyed by the session id baked
// into the graph (not a thread-local, so hooks on prim::fork threads still reach it). With
// no hooks set they pass their input through. The search's feature tap (layer_discovery.h)
// and the quantizer's activation probe (probed_model.h) are two uses of it.
#ifndef OMPQ_WORKERS_ENGINE_INSTRUMENTED_MODEL_H_
#define OMPQ_WORKERS_ENGINE_INSTRUMENTED_MODEL_H_

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/engine/graph_layers.h"
#include "workers/engine/torchscript_model.h"

namespace ompq::engine {

/// The input hook's op name (BRECQ's block extraction sees through it).
inline constexpr char kProbeOp[] = "ompq::act_probe";
/// The output hook's op name.
inline constexpr char kTapOp[] = "ompq::tap";

/// Which hooks a model carries at each site.
struct HookPoints {
  bool input = false;
  bool weight = false;
  bool output = false;
};

/// What the hook ops call, inside the forward pass; throwing stops the pass.
class SiteHooks {
 public:
  virtual ~SiteHooks() = default;
  virtual at::Tensor OnInput(int64_t site, const at::Tensor& x) { (void)site; return x; }
  virtual at::Tensor OnWeight(int64_t site, const at::Tensor& w) { (void)site; return w; }
  virtual void OnOutput(int64_t site, const at::Tensor& y) { (void)site; (void)y; }
};

class InstrumentedModel {
 public:
  /// Rewrites `model`'s forward (the module itself is not changed). INVALID_MODEL without a
  /// forward, INPUT_MISMATCH when forward needs more than one argument without a default.
  static absl::StatusOr<std::unique_ptr<InstrumentedModel>> Create(LoadedModel model,
                                                                   HookPoints points);
  ~InstrumentedModel();
  InstrumentedModel(const InstrumentedModel&) = delete;
  InstrumentedModel& operator=(const InstrumentedModel&) = delete;

  /// The hooks the ops call from now on (null: none); the caller keeps them alive.
  void SetHooks(SiteHooks* hooks);

  /// The instrumented forward on `batch` (moved to the model's device). INPUT_MISMATCH
  /// "<context>: <LibTorch's message>" when it throws; `context` defaults to "the model
  /// rejects inputs of shape [...]".
  absl::StatusOr<c10::IValue> Forward(const torch::Tensor& batch, const std::string& context = "");
  /// The untouched forward graph, inlined, run the same way (no hooks, no folding).
  absl::StatusOr<c10::IValue> ForwardUntouched(const torch::Tensor& batch,
                                               const std::string& context = "");

  torch::jit::Module& module() { return module_; }
  const torch::Device& device() const { return device_; }
  const std::vector<LayerSiteNode>& sites() const { return sites_; }
  torch::jit::Graph& graph() { return *graph_; }
  std::shared_ptr<torch::jit::Graph> shared_graph() const { return graph_; }
  const torch::jit::Value* self() const { return graph_->inputs()[0]; }

 private:
  InstrumentedModel() = default;
  absl::StatusOr<c10::IValue> Run(torch::jit::GraphFunction& function,
                                  const torch::Tensor& batch, const std::string& context);

  torch::jit::Module module_;
  torch::Device device_ = torch::kCPU;
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unique_ptr<torch::jit::GraphFunction> function_;   // With the hooks.
  std::unique_ptr<torch::jit::GraphFunction> untouched_;  // Inlined only.
  std::vector<LayerSiteNode> sites_;
  std::vector<c10::IValue> extra_args_;  // Defaults of forward's arguments after the first.
  int64_t session_ = 0;
};

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_INSTRUMENTED_MODEL_H_
