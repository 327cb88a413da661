#include "workers/engine/qat.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace ompq::engine {

absl::StatusOr<LsqQuantizer> LsqQuantizer::From(const QuantParams& params,
                                                const torch::Device& device) {
  if (!params.scale.defined() || !params.zero_point.defined() || params.channels() < 1 ||
      params.zero_point.numel() != params.channels()) {
    return absl::InvalidArgumentError("a learned quantizer needs fitted scales and zero points");
  }
  LsqQuantizer q;
  q.params_ = params;
  torch::NoGradGuard no_grad;
  q.scale_ = params.scale.to(device, torch::kFloat).clone().set_requires_grad(true);
  q.zero_point_ = params.zero_point.to(device, torch::kFloat).clone();
  return q;
}

torch::Tensor LsqQuantizer::Apply(const torch::Tensor& x) const {
  const int64_t qmax = params_.quant_max();
  if (params_.axis < 0) {
    // One step size per tensor: n is one sample's elements (LSQ's "features").
    const int64_t n = x.dim() > 0 && x.size(0) > 0 ? x.numel() / x.size(0) : x.numel();
    const double g = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, n) * qmax));
    return at::_fake_quantize_learnable_per_tensor_affine(x, scale_, zero_point_,
                                                          params_.quant_min(), qmax, g);
  }
  const int64_t n = x.size(0) > 0 ? x.numel() / x.size(0) : 1;
  const double g = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, n) * qmax));
  return at::_fake_quantize_learnable_per_channel_affine(x, scale_, zero_point_, params_.axis,
                                                         params_.quant_min(), qmax, g);
}

void LsqQuantizer::ClampScale() {
  torch::NoGradGuard no_grad;
  scale_.clamp_min_(kMinScale);
}

QuantParams LsqQuantizer::Params() const {
  QuantParams out = params_;
  out.scale = scale_.detach().to(torch::kCPU, torch::kDouble).clone();
  return out;
}

}  // namespace ompq::engine
