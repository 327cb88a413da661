#include "workers/engine/adaround.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

// Stretch of the rectified sigmoid (AdaRound eq. 23): lets h(V) reach exactly 0 and 1.
constexpr double kZeta = 1.1;
constexpr double kGamma = -0.1;

absl::Status FromTorchError(const c10::Error& e) {
  return absl::InvalidArgumentError(absl::StrCat("torch: ", e.what_without_backtrace()));
}

// One value per spatial dimension; a single value applies to all of them.
absl::StatusOr<std::vector<int64_t>> Expand(const std::vector<int64_t>& v, int64_t dims,
                                            const char* name) {
  if (v.size() == 1) return std::vector<int64_t>(dims, v[0]);
  if (static_cast<int64_t>(v.size()) != dims) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " has ", v.size(), " values for a ", dims, "-d convolution"));
  }
  return v;
}

// ApplyLayer without the Status wrapper, for the training loop (which catches c10::Error).
torch::Tensor Apply(const LayerOp& op, const std::vector<int64_t>& stride,
                    const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                    const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (op.kind == LayerOp::Kind::kLinear) return torch::linear(x, w, b);
  const int64_t dims = w.dim() - 2;
  return torch::convolution(x, w, b, stride, padding, dilation, /*transposed=*/false,
                            std::vector<int64_t>(dims, 0), op.groups);
}

// The layer with its convolution parameters checked and expanded once.
struct BoundLayer {
  LayerOp op;
  std::vector<int64_t> stride, padding, dilation;

  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& w,
                           const torch::Tensor& b) const {
    return Apply(op, stride, padding, dilation, x, w, b);
  }
};

absl::StatusOr<BoundLayer> Bind(const LayerOp& op, const torch::Tensor& weight) {
  BoundLayer layer{op, {}, {}, {}};
  if (op.kind == LayerOp::Kind::kLinear) {
    if (weight.dim() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("a linear weight is 2-d, got ", weight.dim(), "-d"));
    }
    return layer;
  }
  if (weight.dim() < 3 || weight.dim() > 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("a convolution weight is 3-d to 5-d, got ", weight.dim(), "-d"));
  }
  if (op.groups < 1) return absl::InvalidArgumentError("groups must be at least 1");
  const int64_t dims = weight.dim() - 2;
  ASSIGN_OR_RETURN(layer.stride, Expand(op.stride, dims, "stride"));
  ASSIGN_OR_RETURN(layer.padding, Expand(op.padding, dims, "padding"));
  ASSIGN_OR_RETURN(layer.dilation, Expand(op.dilation, dims, "dilation"));
  return layer;
}

absl::Status CheckOptions(const AdaRoundOptions& o) {
  if (o.iters < 0 || o.batch_size < 1 || o.eval_batch_size < 1) {
    return absl::InvalidArgumentError("iters must be >= 0, batch_size and eval_batch_size >= 1");
  }
  if (!(o.learning_rate > 0) || !(o.reg_weight >= 0) || !(o.beta_start > 0) || !(o.beta_end > 0) ||
      !(o.warm_start >= 0 && o.warm_start <= 1)) {
    return absl::InvalidArgumentError(
        "AdaRound needs learning_rate > 0, reg_weight >= 0, betas > 0, warm_start in [0, 1]");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<torch::Tensor> ApplyLayer(const LayerOp& op, const torch::Tensor& x,
                                         const torch::Tensor& weight, const torch::Tensor& bias) {
  try {
    ASSIGN_OR_RETURN(BoundLayer layer, Bind(op, weight));
    return layer(x, weight, bias);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<AdaRoundWeight> AdaRoundWeight::Create(const torch::Tensor& weight,
                                                      const QuantParams& params) {
  if (params.axis != 0) {
    return absl::InvalidArgumentError("AdaRound needs a per-channel weight quantizer");
  }
  // Quantize validates params against the weight and gives the nearest-rounding codes.
  ASSIGN_OR_RETURN(torch::Tensor nearest, Quantize(weight, params));
  try {
    torch::NoGradGuard no_grad;
    std::vector<int64_t> shape(weight.dim(), 1);
    shape[0] = weight.size(0);
    torch::Tensor s = params.scale.to(weight.device(), torch::kDouble).reshape(shape);
    torch::Tensor z = params.zero_point.to(weight.device(), torch::kDouble).reshape(shape);
    torch::Tensor scaled = weight.detach().to(torch::kDouble) / s;
    torch::Tensor floor = torch::floor(scaled);
    // h(V) = frac  <=>  sigmoid(V) = (frac - gamma) / (zeta - gamma), always inside (0, 1).
    torch::Tensor p = (scaled - floor - kGamma) / (kZeta - kGamma);
    AdaRoundWeight ada;
    ada.floor_ = (floor + z).to(torch::kFloat);
    ada.nearest_ = nearest.to(torch::kFloat);
    ada.scale_ = s.to(torch::kFloat);
    ada.zero_ = z.to(torch::kFloat);
    ada.v_ = torch::log(p / (1 - p)).to(torch::kFloat).set_requires_grad(true);
    ada.quant_min_ = static_cast<double>(params.quant_min());
    ada.quant_max_ = static_cast<double>(params.quant_max());
    return ada;
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

torch::Tensor AdaRoundWeight::H() const {
  return torch::clamp(torch::sigmoid(v_) * (kZeta - kGamma) + kGamma, 0.0, 1.0);
}

torch::Tensor AdaRoundWeight::SoftWeight() const {
  return scale_ * (torch::clamp(floor_ + H(), quant_min_, quant_max_) - zero_);
}

torch::Tensor AdaRoundWeight::Regularizer(double beta) const {
  return (1.0 - (2.0 * H() - 1.0).abs().pow(beta)).sum();
}

torch::Tensor AdaRoundWeight::HardCodes() const {
  torch::NoGradGuard no_grad;
  return (floor_ + (v_ >= 0).to(torch::kFloat)).clamp(quant_min_, quant_max_).to(torch::kLong);
}

torch::Tensor AdaRoundWeight::NearestCodes() const { return nearest_.to(torch::kLong); }

torch::Tensor AdaRoundWeight::Dequantize(const torch::Tensor& codes) const {
  torch::NoGradGuard no_grad;
  return (codes.to(scale_.device(), torch::kFloat) - zero_) * scale_;
}

std::optional<double> AdaRoundBeta(int64_t iter, const AdaRoundOptions& options) {
  const double warm = options.warm_start * static_cast<double>(options.iters);
  if (static_cast<double>(iter) < warm) return std::nullopt;
  const double span = std::max(static_cast<double>(options.iters) - warm, 1.0);
  const double rel = (static_cast<double>(iter) - warm) / span;
  return options.beta_end + (options.beta_start - options.beta_end) * std::max(0.0, 1.0 - rel);
}

torch::Tensor ReconstructionLoss(const torch::Tensor& output, const torch::Tensor& target) {
  torch::Tensor sq = (output - target).pow(2);
  // Sum over channels, mean over samples and positions: the scale lambda = 0.01 expects.
  const int64_t positions = output.dim() >= 2 ? output.numel() / output.size(1) : 1;
  return sq.sum() / static_cast<double>(std::max<int64_t>(positions, 1));
}

double BatchedMse(
    int64_t n, int64_t batch_size,
    const std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor&)>& batch,
    const std::function<torch::Tensor(const torch::Tensor&)>& forward) {
  torch::NoGradGuard no_grad;
  double sum = 0;
  int64_t count = 0;
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t end = std::min(n, start + batch_size);
    auto [x, y] = batch(torch::arange(start, end, torch::kLong));
    torch::Tensor out = forward(x);
    sum += (out - y).to(torch::kDouble).pow(2).sum().item<double>();
    count += out.numel();
  }
  return sum / static_cast<double>(std::max<int64_t>(count, 1));
}

absl::StatusOr<AdaRoundResult> RunAdaRound(const torch::Tensor& weight, const torch::Tensor& bias,
                                           const LayerOp& op, const QuantParams& params,
                                           const torch::Tensor& inputs,
                                           const torch::Tensor& targets,
                                           const AdaRoundOptions& options,
                                           const ProgressCallback& progress) {
  RETURN_IF_ERROR(CheckOptions(options));
  if (!weight.defined() || !weight.is_floating_point()) {
    return absl::InvalidArgumentError("AdaRound needs a floating-point weight");
  }
  if (!inputs.defined() || inputs.dim() < 1 || inputs.size(0) < 1) {
    return absl::InvalidArgumentError("AdaRound needs at least one input sample");
  }
  const int64_t n = inputs.size(0);
  if (targets.defined() && (targets.dim() < 1 || targets.size(0) != n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("targets must have one entry per input sample (", n, ")"));
  }
  ASSIGN_OR_RETURN(BoundLayer layer, Bind(op, weight));
  try {
    // Callers may hold InferenceMode or NoGrad; learning V needs autograd.
    c10::InferenceMode no_inference(false);
    torch::AutoGradMode grad(true);
    const torch::Device device = weight.device();
    const torch::Tensor w = weight.detach().to(torch::kFloat);
    const torch::Tensor b = bias.defined() ? bias.detach().to(device, torch::kFloat) : bias;
    ASSIGN_OR_RETURN(AdaRoundWeight ada, AdaRoundWeight::Create(w, params));

    // Inputs and targets for the samples `index` (int64 on the CPU), on the weight's device.
    auto batch = [&](const torch::Tensor& index) {
      torch::Tensor x = inputs.index_select(0, index.to(inputs.device())).to(device, torch::kFloat);
      torch::NoGradGuard no_grad;
      torch::Tensor y =
          targets.defined()
              ? targets.index_select(0, index.to(targets.device())).to(device, torch::kFloat)
              : layer(x, w, b);
      return std::make_pair(x, y);
    };
    // Mean squared output error over all samples, for a fixed weight.
    auto mse = [&](const torch::Tensor& qw) {
      return BatchedMse(n, options.eval_batch_size, batch,
                        [&](const torch::Tensor& x) { return layer(x, qw, b); });
    };

    AdaRoundResult result;
    const torch::Tensor nearest = ada.NearestCodes();
    result.mse_nearest = mse(ada.Dequantize(nearest));

    torch::optim::Adam optimizer({ada.v()}, torch::optim::AdamOptions(options.learning_rate));
    // A private generator: the sampling depends on the seed alone, not on global state.
    at::Generator generator = at::detail::createCPUGenerator(options.seed);
    const int64_t batch_size = std::min(options.batch_size, n);
    const int64_t report_every = std::max<int64_t>(1, options.iters / 100);
    for (int64_t t = 0; t < options.iters; ++t) {
      torch::Tensor index = torch::randperm(n, generator, torch::kLong).slice(0, 0, batch_size);
      auto [x, y] = batch(index);
      torch::Tensor loss = ReconstructionLoss(layer(x, ada.SoftWeight(), b), y);
      if (std::optional<double> beta = AdaRoundBeta(t, options)) {
        loss = loss + options.reg_weight * ada.Regularizer(*beta);
      }
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      if (progress && ((t + 1) % report_every == 0 || t + 1 == options.iters) &&
          !progress(static_cast<double>(t + 1) / static_cast<double>(options.iters))) {
        return absl::CancelledError(
            absl::StrCat("AdaRound stopped after ", t + 1, " of ", options.iters, " steps"));
      }
    }

    result.codes = ada.HardCodes();
    result.weight = ada.Dequantize(result.codes);
    result.mse_adaround = mse(result.weight);
    // Learning is a heuristic: never hand back a rounding worse than the baseline.
    if (!(result.mse_adaround < result.mse_nearest)) {
      result.kept_nearest = true;
      result.codes = nearest;
      result.weight = ada.Dequantize(nearest);
      result.mse_adaround = result.mse_nearest;
    }
    return result;
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

}  // namespace ompq::engine
