#include "workers/engine/ptq.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_error.h"
#include "common/status_macros.h"
#include "workers/engine/adaround.h"
#include "workers/engine/brecq.h"
#include "workers/engine/graph_layers.h"

namespace ompq::engine {
namespace {

// Multiply-adds per AdaRound step below which the step runs on one thread. A step is a
// dozen small ops; with several threads each op opens an OpenMP region that waits for
// every thread, which on a busy machine costs far more than the work (measured: a 5-layer
// model's default PTQ took minutes at load 20; docs/benchmarks.md has the same effect
// for the Gram work).
constexpr int64_t kSingleThreadStepMacs = int64_t{64} << 20;

absl::Status Cancelled() {
  return JobFailure(absl::StatusCode::kCancelled, reason::kCancelled,
                    "quantization was cancelled");
}

// ---------------------------------------------------------------------------------------
// BRECQ: the residual blocks the graph reveals, reconstructed jointly (brecq.h).

struct PlannedBlock {
  std::vector<int> layers;  // Indices into the layers, execution order.
  std::vector<std::string> names;  // Layer names in the block graph's weight order.
  int input_site = -1;
  std::shared_ptr<BlockGraph> quantized;  // The working model's block, weights as inputs.
  std::shared_ptr<BlockGraph> reference;  // The float model's block.
};

// Blocks whose layers are all quantized and replayable; a block that cannot be extracted
// leaves its layers to per-layer AdaRound. Both models come from one file, so their graphs
// have the same blocks.
std::vector<PlannedBlock> PlanBlocks(ProbedModel& fp, ProbedModel& work,
                                     const std::vector<QuantLayer>& layers) {
  std::vector<PlannedBlock> planned;
  const std::vector<ResidualBlock> blocks =
      FindResidualBlocks(work.graph(), work.sites(), kProbeOp);
  const std::vector<ResidualBlock> fp_blocks = FindResidualBlocks(fp.graph(), fp.sites(), kProbeOp);
  if (blocks.size() != fp_blocks.size()) return planned;
  std::unordered_map<std::string, int> layer_of;
  for (size_t l = 0; l < layers.size(); ++l) layer_of[layers[l].name] = static_cast<int>(l);
  const ActivationAt activation = [&work](int site) -> std::optional<ActFakeQuant> {
    std::optional<ActQuant> q = work.session().activation(site);
    if (!q.has_value()) return std::nullopt;
    return ActFakeQuant{q->scale, q->zero_point, q->params.quant_min(), q->params.quant_max()};
  };
  for (size_t b = 0; b < blocks.size(); ++b) {
    if (blocks[b].sites != fp_blocks[b].sites) continue;
    absl::StatusOr<BlockGraph> quantized = BlockGraph::Extract(
        work.graph(), blocks[b], work.sites(), kProbeOp, activation, /*weights_as_inputs=*/true);
    absl::StatusOr<BlockGraph> reference = BlockGraph::Extract(
        fp.graph(), fp_blocks[b], fp.sites(), kProbeOp, nullptr, /*weights_as_inputs=*/false);
    if (!quantized.ok() || !reference.ok()) continue;
    PlannedBlock block;
    block.names = quantized->layer_names();
    block.input_site = blocks[b].input_site;
    bool usable = true;
    for (const std::string& name : block.names) {
      auto it = layer_of.find(name);
      usable = usable && it != layer_of.end() && layers[it->second].op.has_value();
      if (usable) block.layers.push_back(it->second);
    }
    if (!usable) continue;
    std::sort(block.layers.begin(), block.layers.end());
    block.quantized = std::make_shared<BlockGraph>(*std::move(quantized));
    block.reference = std::make_shared<BlockGraph>(*std::move(reference));
    planned.push_back(std::move(block));
  }
  return planned;
}

// Learns the rounding of the block's layers on the block inputs the quantized model
// produces against the float model's block outputs, installs it and records the unit.
absl::Status ReconstructBlock(const PlannedBlock& block, ProbedModel& fp, ProbedModel& work,
                              std::vector<QuantLayer>& layers, const torch::Tensor& calib,
                              const PtqOptions& options, const ProgressCallback& progress,
                              nlohmann::json& units) {
  // Float inputs, quantized inputs and targets share the memory bound.
  const int64_t share = options.max_capture_bytes / 3;
  ASSIGN_OR_RETURN(torch::Tensor fp_inputs,
                   fp.Capture(block.input_site, calib, calib.size(0), share));
  std::vector<torch::Tensor> target_parts;
  RETURN_IF_ERROR(CallTorch(
      absl::StatusCode::kInvalidArgument, reason::kInputMismatch, "cannot run a residual block",
      [&] {
        const torch::Tensor first =
            block.reference->Run(fp.module(), fp_inputs.narrow(0, 0, 1).to(fp.device()));
        const int64_t per_sample = std::max<int64_t>(1, first.numel() * 4);
        const int64_t samples =
            std::max<int64_t>(std::min<int64_t>(2, fp_inputs.size(0)),
                              std::min<int64_t>(fp_inputs.size(0), share / per_sample));
        for (int64_t begin = 0; begin < samples; begin += kForwardBatch) {
          const torch::Tensor part =
              fp_inputs.narrow(0, begin, std::min(kForwardBatch, samples - begin));
          target_parts.push_back(block.reference->Run(fp.module(), part.to(fp.device())).cpu());
        }
      }));
  fp_inputs = torch::Tensor();
  torch::Tensor targets = torch::cat(target_parts, 0);
  ASSIGN_OR_RETURN(torch::Tensor q_inputs, work.Capture(block.input_site, calib, targets.size(0),
                                                        options.max_capture_bytes));
  const int64_t n = std::min(targets.size(0), q_inputs.size(0));
  auto layer_named = [&](const std::string& name) -> QuantLayer& {
    return *std::find_if(layers.begin(), layers.end(),
                         [&](const QuantLayer& l) { return l.name == name; });
  };
  std::vector<torch::Tensor> fp_weights;
  std::vector<QuantParams> params;
  int64_t fan_in = 0;
  for (const std::string& name : block.names) {
    const QuantLayer& layer = layer_named(name);
    fp_weights.push_back(layer.fp_weight.to(layer.weight.device()));
    params.push_back(layer.weight_params);
    fan_in += layer.fp_weight.numel() / layer.fp_weight.size(0);
  }
  AdaRoundOptions ada;
  ada.iters = options.iters;
  ada.seed = static_cast<uint64_t>(options.seed) * 1000003u +
             static_cast<uint64_t>(block.layers.front());
  // Rough cost of a step: every layer's fan-in at each output position of the block.
  const int64_t positions =
      targets.dim() >= 2 ? targets[0].numel() / std::max<int64_t>(1, targets.size(1)) : 1;
  const int64_t step_macs = positions * fan_in * ada.batch_size;
  IntraOpThreads threads(step_macs < kSingleThreadStepMacs ? 1 : at::get_num_threads());
  ASSIGN_OR_RETURN(BrecqResult result,
                   RunBlockReconstruction(*block.quantized, work.module(), fp_weights, params,
                                          q_inputs.narrow(0, 0, n), targets.narrow(0, 0, n), ada,
                                          progress));
  const std::string names = absl::StrJoin(block.names, ", ");
  for (size_t k = 0; k < block.names.size(); ++k) {
    QuantLayer& layer = layer_named(block.names[k]);
    layer.codes = result.codes[k];
    layer.mse_nearest = result.mse_nearest;
    layer.mse_quantized = result.mse_brecq;
    layer.samples = n;
    layer.method = result.kept_nearest ? "nearest (BRECQ did not improve)" : "brecq";
    layer.note = absl::StrCat("reconstructed with its residual block (", names,
                              "): the errors are the block output's");
    InstallWeight(layer, result.weights[k].to(layer.weight.scalar_type()));
  }
  units.push_back({{"layers", block.names},
                   {"method", result.kept_nearest ? "nearest" : "brecq"},
                   {"mse_nearest", result.mse_nearest},
                   {"mse", result.mse_brecq},
                   {"samples", n}});
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<nlohmann::json> RunPtq(const PtqOptions& options, ProbedModel& fp,
                                      ProbedModel& work, std::vector<QuantLayer>& layers,
                                      const torch::Tensor& calib, const PtqProgressFn& progress) {
  nlohmann::json units = nlohmann::json::array();
  const int64_t n_layers = static_cast<int64_t>(layers.size());
  // BRECQ for the residual blocks, when the loop reaches a block's first layer; the other
  // layers get AdaRound one by one.
  const std::vector<PlannedBlock> blocks = PlanBlocks(fp, work, layers);
  std::vector<int> block_of(n_layers, -1);
  for (size_t b = 0; b < blocks.size(); ++b) {
    for (int l : blocks[b].layers) block_of[l] = static_cast<int>(b);
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    QuantLayer& layer = layers[i];
    if (block_of[i] >= 0) {
      const PlannedBlock& block = blocks[block_of[i]];
      if (block.layers.front() != i) continue;  // Done with its block.
      const std::string label = absl::StrCat("block ", block_of[i] + 1, " of ", blocks.size(),
                                             " (", absl::StrJoin(block.names, ", "), ")");
      if (!progress(static_cast<double>(i) / n_layers, absl::StrCat("reconstructing ", label))) {
        return Cancelled();
      }
      const double width = static_cast<double>(block.layers.size());
      absl::Status done = ReconstructBlock(
          block, fp, work, layers, calib, options,
          [&](double fraction) {
            return progress((i + width * fraction) / n_layers,
                          absl::StrCat("reconstructing ", label));
          },
          units);
      if (!done.ok()) {
        if (!progress(static_cast<double>(i) / n_layers, "reconstruction stopped")) {
          return Cancelled();
        }
        return done;
      }
      continue;
    }
    const std::string what = absl::StrCat(layer.name, " (", i + 1, " of ", n_layers, ")");
    if (!progress(static_cast<double>(i) / n_layers, absl::StrCat("reconstructing ", what))) {
      return Cancelled();
    }
    if (!layer.op.has_value()) continue;
    const int site = layer.sites.front();
    // Inputs, quantized inputs and targets share the memory bound.
    const int64_t share = options.max_capture_bytes / 3;
    ASSIGN_OR_RETURN(torch::Tensor fp_inputs, fp.Capture(site, calib, calib.size(0), share));
    ASSIGN_OR_RETURN(torch::Tensor first_target,
                     ApplyLayer(*layer.op, fp_inputs.narrow(0, 0, 1), layer.fp_weight.cpu(),
                                layer.fp_bias.defined() ? layer.fp_bias.cpu() : torch::Tensor()));
    const int64_t per_sample = std::max<int64_t>(1, first_target.numel() * 4);
    const int64_t samples =
        std::max<int64_t>(std::min<int64_t>(2, fp_inputs.size(0)),
                          std::min<int64_t>(fp_inputs.size(0), share / per_sample));
    fp_inputs = fp_inputs.narrow(0, 0, samples);
    ASSIGN_OR_RETURN(torch::Tensor q_inputs,
                     work.Capture(site, calib, samples, options.max_capture_bytes));
    const int64_t n = std::min(samples, q_inputs.size(0));
    const std::optional<ActQuant> act = work.session().activation(site);
    torch::Tensor x = q_inputs.narrow(0, 0, n);
    if (act.has_value()) {
      x = at::fake_quantize_per_tensor_affine(x, act->scale, act->zero_point,
                                              act->params.quant_min(), act->params.quant_max());
    }
    std::vector<torch::Tensor> target_parts;
    for (int64_t begin = 0; begin < n; begin += kForwardBatch) {
      ASSIGN_OR_RETURN(torch::Tensor part,
                       ApplyLayer(*layer.op,
                                  fp_inputs.narrow(0, begin, std::min(kForwardBatch, n - begin)),
                                  layer.fp_weight.cpu(),
                                  layer.fp_bias.defined() ? layer.fp_bias.cpu() : torch::Tensor()));
      target_parts.push_back(part);
    }
    fp_inputs = torch::Tensor();
    const torch::Tensor targets = torch::cat(target_parts, 0);
    AdaRoundOptions ada;
    ada.iters = options.iters;
    const int64_t step_macs = targets[0].numel() * (layer.fp_weight.numel() /
                                                    layer.fp_weight.size(0)) * ada.batch_size;
    IntraOpThreads threads(step_macs < kSingleThreadStepMacs ? 1 : at::get_num_threads());
    ada.seed = static_cast<uint64_t>(options.seed) * 1000003u + static_cast<uint64_t>(i);
    absl::StatusOr<AdaRoundResult> result = RunAdaRound(
        layer.fp_weight.to(layer.weight.device()),
        layer.fp_bias.defined() ? layer.fp_bias.to(layer.weight.device()) : torch::Tensor(),
        *layer.op, layer.weight_params, x, targets, ada, [&](double fraction) {
          return progress((i + fraction) / n_layers, absl::StrCat("reconstructing ", what));
        });
    if (!result.ok()) {
      if (!progress(static_cast<double>(i) / n_layers, "reconstruction stopped")) {
        return Cancelled();
      }
      return result.status();
    }
    layer.codes = result->codes;
    layer.mse_nearest = result->mse_nearest;
    layer.mse_quantized = result->mse_adaround;
    layer.samples = n;
    layer.method = result->kept_nearest ? "nearest (AdaRound did not improve)" : "adaround";
    InstallWeight(layer, result->weight.to(layer.weight.scalar_type()));
    units.push_back({{"layers", {layer.name}},
                     {"method", result->kept_nearest ? "nearest" : "adaround"},
                     {"mse_nearest", result->mse_nearest},
                     {"mse", result->mse_adaround},
                     {"samples", n}});
  }
  return units;
}

}  // namespace ompq::engine
