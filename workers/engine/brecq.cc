#include "workers/engine/brecq.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

using torch::jit::Node;
using torch::jit::Value;

absl::Status FromTorchError(const c10::Error& e) {
  return absl::InvalidArgumentError(absl::StrCat("torch: ", e.what_without_backtrace()));
}

void CollectKind(torch::jit::Block* block, const std::string& kind, std::vector<Node*>& found) {
  for (Node* node : block->nodes()) {
    if (node->kind().toQualString() == kind) found.push_back(node);
    for (torch::jit::Block* inner : node->blocks()) CollectKind(inner, kind, found);
  }
}

}  // namespace

absl::StatusOr<BlockGraph> BlockGraph::Extract(torch::jit::Graph& graph, const ResidualBlock& block,
                                               const std::vector<LayerSiteNode>& sites,
                                               const std::string& tap_kind,
                                               const ActivationAt& activation,
                                               bool weights_as_inputs) {
  if (block.input == nullptr || block.output == nullptr || block.sites.empty()) {
    return absl::InvalidArgumentError("not a residual block");
  }
  BlockGraph result;
  try {
    auto g = std::make_shared<torch::jit::Graph>();
    Value* self = g->addInput("self")->setType(graph.inputs()[0]->type());
    Value* x = g->addInput("x")->setType(block.input->type());
    std::unordered_map<Value*, Value*> env = {{graph.inputs()[0], self}, {block.input, x}};
    std::unordered_map<Node*, Node*> clones;
    for (Node* node : BlockNodes(graph, block)) {
      Node* clone = g->insertNode(g->createClone(node, [&](Value* v) {
        auto it = env.find(v);
        TORCH_CHECK(it != env.end(), "the block reads a value from outside it");
        return it->second;
      }));
      for (size_t i = 0; i < node->outputs().size(); ++i) env[node->output(i)] = clone->output(i);
      clones[node] = clone;
    }
    auto output = env.find(block.output);
    if (output == env.end()) return absl::InvalidArgumentError("the block output was not cloned");
    g->registerOutput(output->second);

    if (weights_as_inputs) {
      std::map<std::string, Value*> inputs;
      for (int s : block.sites) {
        auto clone = clones.find(sites[s].node);
        if (clone == clones.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat("layer '", sites[s].name, "' is not a top-level node of the block"));
        }
        Value*& input = inputs[sites[s].name];
        if (input == nullptr) {
          input = g->addInput()->setType(c10::TensorType::get());
          result.layer_names_.push_back(sites[s].name);
        }
        clone->second->replaceInput(1, input);
      }
    }

    // The taps become the activation quantizers (or nothing): the fake-quantize op has a
    // straight-through gradient, which the probe op has not.
    std::vector<Node*> taps;
    if (!tap_kind.empty()) CollectKind(g->block(), tap_kind, taps);
    const c10::Symbol fake_quantize =
        c10::Symbol::fromQualString("aten::fake_quantize_per_tensor_affine");
    for (Node* tap : taps) {
      std::optional<ActFakeQuant> act;
      c10::optional<c10::IValue> site = torch::jit::toIValue(tap->input(2));
      if (activation && site.has_value() && site->isInt()) {
        act = activation(static_cast<int>(site->toInt()));
      }
      Value* replacement = tap->input(0);
      if (act.has_value()) {
        torch::jit::WithInsertPoint insert_point(tap);
        replacement = g->insert(fake_quantize, {tap->input(0), act->scale, act->zero_point,
                                                act->quant_min, act->quant_max});
      }
      tap->output()->replaceAllUsesWith(replacement);
      tap->destroy();
    }
    torch::jit::EliminateDeadCode(g);
    g->lint();
    result.graph_ = g;
    result.function_ = std::make_shared<torch::jit::GraphFunction>(
        "ompq_block", g, nullptr, torch::jit::ExecutorExecutionMode::SIMPLE);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
  return result;
}

torch::Tensor BlockGraph::Run(const torch::jit::Module& module, const torch::Tensor& x,
                              const std::vector<torch::Tensor>& weights) const {
  std::vector<c10::IValue> args = {module._ivalue(), x};
  args.insert(args.end(), weights.begin(), weights.end());
  return (*function_)(std::move(args)).toTensor();
}

absl::StatusOr<BrecqResult> RunBlockReconstruction(
    const BlockGraph& quantized, const torch::jit::Module& module,
    const std::vector<torch::Tensor>& fp_weights, const std::vector<QuantParams>& params,
    const torch::Tensor& inputs, const torch::Tensor& targets, const AdaRoundOptions& options,
    const ProgressCallback& progress) {
  const size_t layers = quantized.layer_names().size();
  if (layers == 0 || fp_weights.size() != layers || params.size() != layers) {
    return absl::InvalidArgumentError(absl::StrCat("the block has ", layers, " layers, got ",
                                                   fp_weights.size(), " weights and ",
                                                   params.size(), " quantizers"));
  }
  if (options.iters < 0 || options.batch_size < 1 || options.eval_batch_size < 1) {
    return absl::InvalidArgumentError("iters must be >= 0, batch_size and eval_batch_size >= 1");
  }
  if (!inputs.defined() || inputs.dim() < 1 || inputs.size(0) < 1 || !targets.defined() ||
      targets.dim() < 1 || targets.size(0) != inputs.size(0)) {
    return absl::InvalidArgumentError("block reconstruction needs inputs and one target each");
  }
  const int64_t n = inputs.size(0);
  try {
    // Callers may hold InferenceMode or NoGrad; learning V needs autograd.
    c10::InferenceMode no_inference(false);
    torch::AutoGradMode grad(true);
    const torch::Device device = fp_weights[0].device();
    std::vector<AdaRoundWeight> ada;
    std::vector<torch::Tensor> variables;
    for (size_t l = 0; l < layers; ++l) {
      ASSIGN_OR_RETURN(AdaRoundWeight weight,
                       AdaRoundWeight::Create(fp_weights[l].detach().to(torch::kFloat), params[l]));
      ada.push_back(std::move(weight));
      variables.push_back(ada.back().v());
    }
    auto batch = [&](const torch::Tensor& index) {
      torch::Tensor x = inputs.index_select(0, index.to(inputs.device())).to(device, torch::kFloat);
      torch::Tensor y =
          targets.index_select(0, index.to(targets.device())).to(device, torch::kFloat);
      return std::make_pair(x, y);
    };
    // Mean squared block output error over all samples, for fixed weights.
    auto mse = [&](const std::vector<torch::Tensor>& weights) {
      return BatchedMse(n, options.eval_batch_size, batch,
                        [&](const torch::Tensor& x) { return quantized.Run(module, x, weights); });
    };

    BrecqResult result;
    result.samples = n;
    std::vector<torch::Tensor> nearest_codes, nearest_weights;
    for (const AdaRoundWeight& a : ada) {
      nearest_codes.push_back(a.NearestCodes());
      nearest_weights.push_back(a.Dequantize(nearest_codes.back()));
    }
    result.mse_nearest = mse(nearest_weights);

    torch::optim::Adam optimizer(variables, torch::optim::AdamOptions(options.learning_rate));
    // A private generator: the sampling depends on the seed alone, not on global state.
    at::Generator generator = at::detail::createCPUGenerator(options.seed);
    const int64_t batch_size = std::min(options.batch_size, n);
    for (int64_t t = 0; t < options.iters; ++t) {
      torch::Tensor index = torch::randperm(n, generator, torch::kLong).slice(0, 0, batch_size);
      auto [x, y] = batch(index);
      std::vector<torch::Tensor> soft;
      for (const AdaRoundWeight& a : ada) soft.push_back(a.SoftWeight());
      torch::Tensor loss = ReconstructionLoss(quantized.Run(module, x, soft), y);
      if (std::optional<double> beta = AdaRoundBeta(t, options)) {
        for (const AdaRoundWeight& a : ada) loss = loss + options.reg_weight * a.Regularizer(*beta);
      }
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      if (progress && !progress(static_cast<double>(t + 1) / static_cast<double>(options.iters))) {
        return absl::CancelledError(absl::StrCat("block reconstruction stopped after ", t + 1,
                                                 " of ", options.iters, " steps"));
      }
    }

    for (const AdaRoundWeight& a : ada) {
      result.codes.push_back(a.HardCodes());
      result.weights.push_back(a.Dequantize(result.codes.back()));
    }
    result.mse_brecq = mse(result.weights);
    // Learning is a heuristic: never hand back a rounding worse than the baseline.
    if (!(result.mse_brecq < result.mse_nearest)) {
      result.kept_nearest = true;
      result.codes = nearest_codes;
      result.weights = nearest_weights;
      result.mse_brecq = result.mse_nearest;
    }
    return result;
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

}  // namespace ompq::engine
