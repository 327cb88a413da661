#include "workers/engine/instrumented_model.h"

#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/library.h>

#include <atomic>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/transformer_rewrite.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

constexpr char kWeightProbeOp[] = "ompq::weight_probe";

absl::Mutex registry_mutex;
std::unordered_map<int64_t, SiteHooks*>& Registry() ABSL_EXCLUSIVE_LOCKS_REQUIRED(registry_mutex) {
  static auto* registry = new std::unordered_map<int64_t, SiteHooks*>();
  return *registry;
}
std::atomic<int64_t> next_session{1};

// The hooks of a session, or null (none set, or the model is gone): the op passes through.
SiteHooks* FindHooks(int64_t session) {
  absl::MutexLock lock(&registry_mutex);
  auto it = Registry().find(session);
  return it != Registry().end() ? it->second : nullptr;
}

at::Tensor InputOp(const at::Tensor& x, int64_t session, int64_t site) {
  SiteHooks* hooks = FindHooks(session);
  return hooks != nullptr ? hooks->OnInput(site, x) : x;
}

at::Tensor WeightOp(const at::Tensor& w, int64_t session, int64_t site) {
  SiteHooks* hooks = FindHooks(session);
  return hooks != nullptr ? hooks->OnWeight(site, w) : w;
}

at::Tensor OutputOp(const at::Tensor& y, int64_t session, int64_t site) {
  if (SiteHooks* hooks = FindHooks(session)) hooks->OnOutput(site, y);
  return y;
}

// Kernels given to def() without a dispatch key are CompositeImplicitAutograd: autograd
// records the ops they call, so QAT's gradients flow through the input and weight hooks.
// The output hook returns its input unchanged (alias annotation "a"), so the interpreter
// frees the tensor exactly when it would have without the hook.
TORCH_LIBRARY_FRAGMENT(ompq, m) {
  m.def("act_probe(Tensor x, int session, int site) -> Tensor", InputOp);
  m.def("weight_probe(Tensor w, int session, int site) -> Tensor", WeightOp);
  m.def("tap(Tensor(a) x, int session, int layer) -> Tensor(a)", OutputOp);
}

// Splices `op(value, session, site)` before `user`'s input `index`.
void HookInput(torch::jit::Graph& graph, Node* user, size_t index, c10::Symbol op,
               int64_t session, int64_t site) {
  torch::jit::WithInsertPoint insert_point(user);
  Value* session_value = graph.insertConstant(session);
  Value* site_value = graph.insertConstant(site);
  Node* call =
      graph.insertNode(graph.create(op, {user->input(index), session_value, site_value}, 1));
  call->output()->setType(user->input(index)->type());
  user->replaceInput(index, call->output());
}

}  // namespace

absl::StatusOr<std::unique_ptr<InstrumentedModel>> InstrumentedModel::Create(LoadedModel loaded,
                                                                             HookPoints points) {
  std::unique_ptr<InstrumentedModel> model(new InstrumentedModel());
  model->session_ = next_session.fetch_add(1);
  model->module_ = std::move(loaded.module);
  model->device_ = loaded.device;
  c10::optional<torch::jit::Method> forward = model->module_.find_method("forward");
  if (!forward.has_value()) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidModel,
                      "the model has no forward method");
  }
  // forward(self, x, ...): later arguments must have defaults, since we pass one tensor.
  const c10::FunctionSchema& schema = forward->function().getSchema();
  if (schema.arguments().size() < 2) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                      "the model's forward takes no input");
  }
  for (size_t i = 2; i < schema.arguments().size(); ++i) {
    const c10::Argument& argument = schema.arguments()[i];
    if (!argument.default_value().has_value()) {
      return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                        absl::StrCat("the model's forward needs argument '", argument.name(),
                                     "' besides the input; ompq passes one input tensor"));
    }
    model->extra_args_.push_back(*argument.default_value());
  }
  std::vector<std::string> still_fused;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInternal, reason::kInternal, "cannot rewrite the forward graph", [&] {
        model->graph_ = forward->graph()->copy();
        torch::jit::Inline(*model->graph_);
        // The untouched graph runs as the instrumented one will (SIMPLE executor,
        // inlined): module.forward()'s first call pays the profiling executor's set-up,
        // seconds on large models, for a check that should be cheap.
        model->untouched_ = std::make_unique<torch::jit::GraphFunction>(
            "ompq_untouched_forward", model->graph_->copy(), nullptr,
            torch::jit::ExecutorExecutionMode::SIMPLE);
        // Each layer call once, fused transformer ops unfused (transformer_rewrite.h).
        PrepareForwardGraph(*model->graph_, model->module_);
        torch::jit::Graph& graph = *model->graph_;
        still_fused = FusedTransformerOps(graph);
        if (!still_fused.empty()) return;
        model->sites_ = FindLayerSites(graph, model->module_);
        const c10::Symbol input_op = c10::Symbol::fromQualString(kProbeOp);
        const c10::Symbol weight_op = c10::Symbol::fromQualString(kWeightProbeOp);
        const c10::Symbol output_op = c10::Symbol::fromQualString(kTapOp);
        for (size_t i = 0; i < model->sites_.size(); ++i) {
          const LayerSiteNode& site = model->sites_[i];
          const auto id = static_cast<int64_t>(i);
          if (points.input) HookInput(graph, site.node, 0, input_op, model->session_, id);
          // Input 1 of every layer op (conv*, _convolution, linear) is its weight.
          if (points.weight) HookInput(graph, site.node, 1, weight_op, model->session_, id);
          if (points.output) {
            Value* tapped =
                site.batch_norm != nullptr ? site.batch_norm->output() : site.node->output();
            torch::jit::WithInsertPoint insert_point(tapped->node()->next());
            Value* session_value = graph.insertConstant(model->session_);
            Value* site_value = graph.insertConstant(id);
            Node* tap = graph.insertNode(
                graph.create(output_op, {tapped, session_value, site_value}, 1));
            tap->output()->setType(tapped->type());
            tapped->replaceAllUsesWith(tap->output());
            tap->replaceInput(0, tapped);
          }
        }
        graph.lint();
        // SIMPLE: run the graph as written; profiling and fusion would only add time to
        // passes that run a few times each.
        model->function_ = std::make_unique<torch::jit::GraphFunction>(
            "ompq_instrumented_forward", model->graph_, nullptr,
            torch::jit::ExecutorExecutionMode::SIMPLE);
      }));
  if (!still_fused.empty()) {
    // Its projections would silently stay FP32: refuse rather than under-quantize.
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kUnsupportedOp,
                      absl::StrCat("the model runs ", still_fused.front(),
                                   ", which the engine cannot unfold into layers: its "
                                   "projections would stay FP32"));
  }
  return model;
}

InstrumentedModel::~InstrumentedModel() { SetHooks(nullptr); }

void InstrumentedModel::SetHooks(SiteHooks* hooks) {
  absl::MutexLock lock(&registry_mutex);
  if (hooks == nullptr) {
    Registry().erase(session_);
  } else {
    Registry()[session_] = hooks;
  }
}

absl::StatusOr<c10::IValue> InstrumentedModel::Forward(const torch::Tensor& batch,
                                                       const std::string& context) {
  return Run(*function_, batch, context);
}

absl::StatusOr<c10::IValue> InstrumentedModel::ForwardUntouched(const torch::Tensor& batch,
                                                                const std::string& context) {
  return Run(*untouched_, batch, context);
}

absl::StatusOr<c10::IValue> InstrumentedModel::Run(torch::jit::GraphFunction& function,
                                                   const torch::Tensor& batch,
                                                   const std::string& context) {
  std::vector<c10::IValue> args = {module_._ivalue(), batch.to(device_)};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  c10::IValue output;
  RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInvalidArgument, reason::kInputMismatch,
                            context.empty() ? absl::StrCat("the model rejects inputs of shape [",
                                                           absl::StrJoin(batch.sizes(), ", "), "]")
                                            : context,
                            [&] { output = function(args); }));
  return output;
}

}  // namespace ompq::engine
