#include "workers/engine/qat_training.h"

#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>

#include <cmath>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/job_error.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

absl::StatusOr<torch::Tensor> Logits(const c10::IValue& output, int64_t count) {
  if (!output.isTensor() || output.toTensor().dim() != 2 || output.toTensor().size(0) != count) {
    return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                      "QAT needs a model whose output is [N, classes]");
  }
  return output.toTensor().to(torch::kFloat);
}

// Mean cross-entropy of the model over labelled data, without gradients.
absl::StatusOr<double> MeanLoss(ProbedModel& model, const torch::Tensor& inputs,
                                const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  namespace F = torch::nn::functional;
  double total = 0;
  for (int64_t start = 0; start < inputs.size(0); start += kForwardBatch) {
    const int64_t count = std::min(kForwardBatch, inputs.size(0) - start);
    ASSIGN_OR_RETURN(c10::IValue output, model.Forward(inputs.narrow(0, start, count)));
    ASSIGN_OR_RETURN(torch::Tensor logits, Logits(output, count));
    total += F::cross_entropy(logits, labels.narrow(0, start, count).to(logits.device()),
                              F::CrossEntropyFuncOptions().reduction(torch::kSum))
                 .item<double>();
  }
  return total / std::max<int64_t>(1, inputs.size(0));
}

}  // namespace

absl::StatusOr<nlohmann::json> RunQat(
    const QatTrainOptions& options, ProbedModel& work, std::vector<QuantLayer>& layers,
    const CalibrationData& train,
    const std::function<absl::Status(double, const std::string&)>& progress) {
  namespace F = torch::nn::functional;
  const torch::Tensor& inputs = train.inputs;
  const torch::Tensor& labels = *train.labels;
  const int64_t n = inputs.size(0);
  const int64_t batch = std::min(options.batch_size, n);
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  const int64_t total_steps = options.epochs * steps_per_epoch;
  RETURN_IF_ERROR(progress(0, "QAT: training loss before"));
  ASSIGN_OR_RETURN(const double loss_before, MeanLoss(work, inputs, labels));

  // Callers hold NoGrad (and may hold InferenceMode): training needs autograd.
  c10::InferenceMode no_inference(false);
  torch::AutoGradMode grad_mode(true);
  // Parameters loaded from a torch.jit.save archive keep requires_grad; only the latent
  // weights and the step sizes learn here.
  std::vector<torch::Tensor> frozen;
  for (const torch::Tensor& p : work.module().parameters()) {
    if (p.requires_grad()) {
      frozen.push_back(p);
      p.requires_grad_(false);
    }
  }
  absl::Cleanup unfreeze = [&] {
    for (const torch::Tensor& p : frozen) p.requires_grad_(true);
  };

  std::vector<LsqQuantizer> weight_q, act_q;
  weight_q.reserve(layers.size());
  act_q.reserve(work.sites().size());
  std::vector<const LsqQuantizer*> weight_at(work.sites().size(), nullptr);
  std::vector<const LsqQuantizer*> act_at(work.sites().size(), nullptr);
  std::vector<int> act_site;  // The site of each act_q entry.
  std::vector<torch::Tensor> parameters;
  for (QuantLayer& layer : layers) {
    InstallWeight(layer, layer.fp_weight);  // The latent weight starts at the float one.
    layer.weight.requires_grad_(true);
    parameters.push_back(layer.weight);
    ASSIGN_OR_RETURN(LsqQuantizer q,
                     LsqQuantizer::From(layer.weight_params, layer.weight.device()));
    weight_q.push_back(std::move(q));
    parameters.push_back(weight_q.back().scale());
    for (int site : layer.sites) {
      weight_at[site] = &weight_q.back();
      std::optional<ActQuant> act = work.session().activation(site);
      if (!act.has_value()) continue;
      ASSIGN_OR_RETURN(LsqQuantizer a, LsqQuantizer::From(act->params, work.device()));
      act_q.push_back(std::move(a));
      act_site.push_back(site);
      parameters.push_back(act_q.back().scale());
    }
  }
  for (size_t i = 0; i < act_q.size(); ++i) act_at[act_site[i]] = &act_q[i];
  work.session().SetLearned(act_at, weight_at);
  absl::Cleanup unlearn = [&] {
    work.session().ClearLearned();
    for (QuantLayer& layer : layers) layer.weight.requires_grad_(false);
  };

  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(options.lr));
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));
  int64_t step = 0;
  double epoch_loss = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, generator, torch::kLong);
    epoch_loss = 0;
    for (int64_t start = 0; start < n; start += batch, ++step) {
      const int64_t count = std::min(batch, n - start);
      RETURN_IF_ERROR(progress(
          static_cast<double>(step) / total_steps,
          absl::StrCat("QAT epoch ", epoch + 1, " of ", options.epochs, ", step ",
                       step - epoch * steps_per_epoch + 1, " of ", steps_per_epoch)));
      const torch::Tensor index = order.narrow(0, start, count);
      ASSIGN_OR_RETURN(c10::IValue output, work.Forward(inputs.index_select(0, index)));
      ASSIGN_OR_RETURN(torch::Tensor logits, Logits(output, count));
      torch::Tensor loss =
          F::cross_entropy(logits, labels.index_select(0, index).to(logits.device()));
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        return JobFailure(absl::StatusCode::kInvalidArgument, reason::kInvalidInput,
                          absl::StrCat("QAT diverged at step ", step + 1,
                                       " (the training loss is not finite); lower --lr (was ",
                                       options.lr, ")"));
      }
      epoch_loss += value * count;
      RETURN_IF_ERROR(CallTorch(absl::StatusCode::kInternal, reason::kInternal,
                                "QAT step failed", [&] {
                                  optimizer.zero_grad();
                                  loss.backward();
                                  optimizer.step();
                                }));
      for (LsqQuantizer& q : weight_q) q.ClampScale();
      for (LsqQuantizer& q : act_q) q.ClampScale();
    }
  }
  RETURN_IF_ERROR(progress(1, "QAT: putting the weights on their learned grids"));

  // The learned quantizers become fixed ones: weights on their grids, activations with
  // the learned step sizes.
  std::move(unlearn).Invoke();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers.size(); ++i) {
    QuantLayer& layer = layers[i];
    layer.weight_params = weight_q[i].Params();
    ASSIGN_OR_RETURN(layer.codes, Quantize(layer.weight.detach(), layer.weight_params));
    ASSIGN_OR_RETURN(torch::Tensor dequantized,
                     Dequantize(layer.codes, layer.weight_params, layer.weight.scalar_type()));
    InstallWeight(layer, dequantized.to(layer.weight.device()));
    layer.method = "qat (lsq)";
  }
  for (size_t i = 0; i < act_q.size(); ++i) {
    QuantParams params = act_q[i].Params();
    const double scale = params.scale[0].item<double>();
    const int64_t zero_point = params.zero_point[0].item<int64_t>();
    work.session().SetActivation(act_site[i], ActQuant{std::move(params), scale, zero_point});
  }
  ASSIGN_OR_RETURN(const double loss_after, MeanLoss(work, inputs, labels));
  return nlohmann::json{{"epochs", options.epochs},
                        {"lr", options.lr},
                        {"batch_size", batch},
                        {"samples", n},
                        {"steps", total_steps},
                        {"optimizer", "adam"},
                        {"step_sizes", "learned (LSQ), zero points as calibrated"},
                        {"train_loss_before", loss_before},
                        {"train_loss_last_epoch", epoch_loss / n},
                        {"train_loss_after", loss_after}};
}
}  // namespace ompq::engine
