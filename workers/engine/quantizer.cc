#include "workers/engine/quantizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace ompq::engine {

const char* ExportProfileName(ExportProfile profile) {
  return profile == ExportProfile::kTensorRt ? "tensorrt" : "default";
}

QuantizerOptions WeightQuantizerOptions(int bits, ExportProfile profile) {
  QuantizerOptions options;
  options.bits = bits;
  options.symmetric = SymmetricGrid(profile);
  options.narrow_range = profile == ExportProfile::kTensorRt;
  return options;
}

namespace {

// Shape and device mistakes that slip past our checks surface as c10::Error; they are the
// caller's input, so they become INVALID_ARGUMENT with torch's own message.
absl::Status FromTorchError(const c10::Error& e) {
  return absl::InvalidArgumentError(absl::StrCat("torch: ", e.what_without_backtrace()));
}

absl::Status CheckOptions(const QuantizerOptions& o) {
  if (o.bits < 1 || o.bits > 16) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be in 1..16, got ", o.bits));
  }
  if (o.symmetric && o.bits < 2) {
    return absl::InvalidArgumentError("symmetric quantization needs at least 2 bits");
  }
  if (o.narrow_range && !o.symmetric) {
    return absl::InvalidArgumentError("a narrow range needs a symmetric grid");
  }
  if (!(o.p > 0) || !std::isfinite(o.p)) {
    return absl::InvalidArgumentError(absl::StrCat("p must be positive, got ", o.p));
  }
  if (o.num_candidates < 1 || !(o.ratio_step >= 0) ||
      !(1.0 - (o.num_candidates - 1) * o.ratio_step > 0)) {
    return absl::InvalidArgumentError(
        "the clip ratios 1 - k * ratio_step (k < num_candidates) must all be positive");
  }
  if (o.max_search_elements < 1) {
    return absl::InvalidArgumentError("max_search_elements must be at least 1");
  }
  return absl::OkStatus();
}

absl::Status CheckData(const torch::Tensor& x, absl::string_view what) {
  if (!x.defined() || x.numel() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (!x.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be a floating-point tensor"));
  }
  if (!torch::isfinite(x).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has NaN or infinite values"));
  }
  return absl::OkStatus();
}

// Scale and zero point (both float64 [C]) of the grid for the widened range [lo, hi].
std::pair<torch::Tensor, torch::Tensor> Grid(const torch::Tensor& lo, const torch::Tensor& hi,
                                             int bits, bool symmetric, bool narrow_range) {
  const double qmax = static_cast<double>((int64_t{1} << bits) - 1);
  if (symmetric) {
    torch::Tensor m = torch::maximum(-lo, hi);
    const double steps = narrow_range ? (qmax - 1.0) / 2.0 : qmax / 2.0;  // From 0 to m.
    torch::Tensor scale = (m / steps).clamp_min(kMinScale);
    return {scale, torch::full_like(scale, static_cast<double>(int64_t{1} << (bits - 1)))};
  }
  torch::Tensor scale = ((hi - lo) / qmax).clamp_min(kMinScale);
  return {scale, torch::round(-lo / scale).clamp(0.0, qmax)};
}

// Candidates evaluated together in one pass hold at most this many elements ([K, C, M]):
// small layers then cost a few kernel launches instead of a few per candidate, large ones
// stay within a bounded working set.
constexpr int64_t kSearchChunkElements = int64_t{1} << 22;

// The clipping search of quantizer.h over data [C, M] (float32), one range per row. The
// candidate grids are computed in float64; the element-wise error in float32, which is
// several times faster than float64 here and is the precision the weights have anyway.
// Losses are summed in float64.
QuantParams SearchRange(const torch::Tensor& data, const torch::Tensor& lo0,
                        const torch::Tensor& hi0, const QuantizerOptions& o, int64_t axis) {
  const double qmin = o.narrow_range ? 1.0 : 0.0;
  const double qmax = static_cast<double>((int64_t{1} << o.bits) - 1);
  // Every candidate's grid at once: ratios [K, 1] times the ranges [1, C].
  torch::Tensor ratios =
      1.0 - torch::arange(o.num_candidates, lo0.options()).unsqueeze(1) * o.ratio_step;
  auto [scales, zeros] = Grid(ratios * lo0.unsqueeze(0), ratios * hi0.unsqueeze(0), o.bits,
                              o.symmetric, o.narrow_range);  // [K, C] each.
  const int64_t chunk = std::max<int64_t>(1, kSearchChunkElements / std::max<int64_t>(1, data.numel()));
  std::vector<torch::Tensor> losses;
  for (int64_t k0 = 0; k0 < o.num_candidates; k0 += chunk) {
    const int64_t k1 = std::min<int64_t>(o.num_candidates, k0 + chunk);
    torch::Tensor s = scales.slice(0, k0, k1).to(torch::kFloat).unsqueeze(2);  // [k, C, 1]
    torch::Tensor z = zeros.slice(0, k0, k1).to(torch::kFloat).unsqueeze(2);
    // err = (clamp(round(x / s) + z, qmin, qmax) - z) * s - x, in place to spare allocations.
    torch::Tensor err = torch::div(data.unsqueeze(0), s);
    err.round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s).sub_(data.unsqueeze(0));
    err.abs_();
    if (o.p == 2.0) {
      err.square_();
    } else {
      err.pow_(o.p);
    }
    losses.push_back(err.sum(2, /*keepdim=*/false, torch::kDouble));  // [k, C]
  }
  // The first smallest loss per row: on a tie the wider (earlier) range stays.
  const torch::Tensor best = torch::cat(losses, 0).argmin(0, /*keepdim=*/true);  // [1, C]
  QuantParams params;
  params.bits = o.bits;
  params.symmetric = o.symmetric;
  params.narrow_range = o.narrow_range;
  params.axis = axis;
  params.scale = scales.gather(0, best).squeeze(0).cpu();
  params.zero_point = zeros.gather(0, best).squeeze(0).to(torch::kLong).cpu();
  return params;
}

absl::Status CheckParams(const QuantParams& p) {
  if (p.bits < 1 || p.bits > 16) {
    return absl::InvalidArgumentError(absl::StrCat("bits must be in 1..16, got ", p.bits));
  }
  if (p.axis != -1 && p.axis != 0) {
    return absl::InvalidArgumentError("axis must be -1 (per tensor) or 0 (per channel)");
  }
  if (!p.scale.defined() || !p.zero_point.defined() || p.scale.dim() != 1 ||
      p.zero_point.sizes() != p.scale.sizes() || p.scale.numel() == 0) {
    return absl::InvalidArgumentError("scale and zero_point must be 1-D tensors of one size");
  }
  if (p.axis == -1 && p.scale.numel() != 1) {
    return absl::InvalidArgumentError("a per-tensor quantizer has exactly one scale");
  }
  if (!(p.scale > 0).all().item<bool>()) {
    return absl::InvalidArgumentError("scales must be positive");
  }
  if (!((p.zero_point >= p.quant_min()) & (p.zero_point <= p.quant_max())).all().item<bool>()) {
    return absl::InvalidArgumentError("zero points must lie in the code range");
  }
  return absl::OkStatus();
}

// Scale and zero point shaped to broadcast against x ([C, 1, 1, ...] per channel).
absl::StatusOr<std::pair<torch::Tensor, torch::Tensor>> Broadcastable(const torch::Tensor& x,
                                                                      const QuantParams& p) {
  RETURN_IF_ERROR(CheckParams(p));
  std::vector<int64_t> shape(std::max<int64_t>(x.dim(), 1), 1);
  if (p.axis == 0) {
    if (x.dim() < 1 || x.size(0) != p.channels()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor has ", x.dim() < 1 ? 0 : x.size(0),
                                                     " channels, the quantizer has ",
                                                     p.channels()));
    }
    shape[0] = p.channels();
  }
  torch::Tensor s = p.scale.to(x.device(), torch::kDouble).reshape(shape);
  torch::Tensor z = p.zero_point.to(x.device(), torch::kDouble).reshape(shape);
  return std::make_pair(s, z);
}

}  // namespace

absl::StatusOr<QuantParams> FitWeightQuantizer(const torch::Tensor& weight,
                                               const QuantizerOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  try {
    torch::NoGradGuard no_grad;
    RETURN_IF_ERROR(CheckData(weight, "weight"));
    if (weight.dim() < 1) {
      return absl::InvalidArgumentError("a weight needs an output-channel dimension");
    }
    torch::Tensor data = weight.detach().to(torch::kFloat).reshape({weight.size(0), -1});
    torch::Tensor lo0 = std::get<0>(data.min(1)).to(torch::kDouble).clamp_max(0.0);
    torch::Tensor hi0 = std::get<0>(data.max(1)).to(torch::kDouble).clamp_min(0.0);
    return SearchRange(data, lo0, hi0, options, /*axis=*/0);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<QuantParams> FitActivationQuantizer(const torch::Tensor& activations,
                                                   const QuantizerOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  try {
    torch::NoGradGuard no_grad;
    RETURN_IF_ERROR(CheckData(activations, "activations"));
    torch::Tensor flat = activations.detach().reshape({-1});
    torch::Tensor lo0 = flat.min().to(torch::kDouble).clamp_max(0.0).reshape({1});
    torch::Tensor hi0 = flat.max().to(torch::kDouble).clamp_min(0.0).reshape({1});
    const int64_t n = flat.numel();
    if (n > options.max_search_elements) {
      // A strided subset keeps the search cost bounded and is reproducible.
      const int64_t stride = (n + options.max_search_elements - 1) / options.max_search_elements;
      flat = flat.slice(0, 0, n, stride);
    }
    torch::Tensor data = flat.to(torch::kFloat).reshape({1, -1});
    return SearchRange(data, lo0, hi0, options, /*axis=*/-1);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<QuantParams> QuantParamsFromRange(const torch::Tensor& lo, const torch::Tensor& hi,
                                                 int bits, bool symmetric, int64_t axis) {
  QuantizerOptions options;
  options.bits = bits;
  options.symmetric = symmetric;
  RETURN_IF_ERROR(CheckOptions(options));
  if (axis != -1 && axis != 0) {
    return absl::InvalidArgumentError("axis must be -1 (per tensor) or 0 (per channel)");
  }
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor l = lo.detach().to(torch::kCPU, torch::kDouble).reshape({-1});
    torch::Tensor h = hi.detach().to(torch::kCPU, torch::kDouble).reshape({-1});
    if (l.numel() == 0 || l.sizes() != h.sizes() || (axis == -1 && l.numel() != 1)) {
      return absl::InvalidArgumentError("lo and hi must have one value per channel");
    }
    if (!(torch::isfinite(l).all().item<bool>() && torch::isfinite(h).all().item<bool>()) ||
        (l > h).any().item<bool>()) {
      return absl::InvalidArgumentError("ranges must be finite with lo <= hi");
    }
    auto [scale, zero] = Grid(l.clamp_max(0.0), h.clamp_min(0.0), bits, symmetric, false);
    QuantParams params;
    params.bits = bits;
    params.symmetric = symmetric;
    params.axis = axis;
    params.scale = scale;
    params.zero_point = zero.to(torch::kLong);
    return params;
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<torch::Tensor> Quantize(const torch::Tensor& x, const QuantParams& params) {
  try {
    torch::NoGradGuard no_grad;
    if (!x.defined() || !x.is_floating_point()) {
      return absl::InvalidArgumentError("Quantize needs a floating-point tensor");
    }
    ASSIGN_OR_RETURN(auto sz, Broadcastable(x, params));
    auto& [s, z] = sz;
    return (torch::round(x.detach().to(torch::kDouble) / s) + z)
        .clamp(static_cast<double>(params.quant_min()), static_cast<double>(params.quant_max()))
        .to(torch::kLong);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<torch::Tensor> Dequantize(const torch::Tensor& codes, const QuantParams& params,
                                         torch::ScalarType dtype) {
  try {
    torch::NoGradGuard no_grad;
    if (!codes.defined()) return absl::InvalidArgumentError("Dequantize needs codes");
    ASSIGN_OR_RETURN(auto sz, Broadcastable(codes, params));
    auto& [s, z] = sz;
    return ((codes.to(torch::kDouble) - z) * s).to(dtype);
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

absl::StatusOr<torch::Tensor> QuantizeDequantize(const torch::Tensor& x,
                                                 const QuantParams& params) {
  ASSIGN_OR_RETURN(torch::Tensor codes, Quantize(x, params));
  return Dequantize(codes, params, x.scalar_type());
}

std::vector<Encoding> EncodingsOf(const QuantParams& params) {
  std::vector<Encoding> out;
  if (!params.scale.defined() || !params.zero_point.defined()) return out;
  torch::Tensor scale = params.scale.to(torch::kCPU, torch::kDouble).contiguous();
  torch::Tensor zero = params.zero_point.to(torch::kCPU, torch::kLong).contiguous();
  const double* s = scale.data_ptr<double>();
  const int64_t* z = zero.data_ptr<int64_t>();
  out.reserve(scale.numel());
  for (int64_t c = 0; c < scale.numel(); ++c) {
    Encoding e;
    e.bitwidth = params.bits;
    e.scale = s[c];
    e.offset = -z[c];
    e.min = static_cast<double>(e.offset + params.quant_min()) * e.scale;
    e.max = static_cast<double>(e.offset + params.quant_max()) * e.scale;
    e.is_symmetric = params.symmetric;
    out.push_back(e);
  }
  return out;
}

absl::StatusOr<FoldedLayer> FoldBatchNorm(const torch::Tensor& weight, const torch::Tensor& bias,
                                          const BatchNormParams& bn) {
  try {
    torch::NoGradGuard no_grad;
    if (!weight.defined() || weight.dim() < 1 || !weight.is_floating_point()) {
      return absl::InvalidArgumentError("FoldBatchNorm needs a floating-point weight [O, ...]");
    }
    const int64_t out = weight.size(0);
    auto per_channel = [out](const torch::Tensor& t, bool optional, const char* name) {
      if (!t.defined()) {
        return optional
                   ? absl::OkStatus()
                   : absl::InvalidArgumentError(absl::StrCat("BatchNorm ", name, " is missing"));
      }
      if (t.numel() != out) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, " has ", t.numel(), " values, the layer has ", out, " output channels"));
      }
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(per_channel(bias, true, "bias"));
    RETURN_IF_ERROR(per_channel(bn.running_mean, false, "running_mean"));
    RETURN_IF_ERROR(per_channel(bn.running_var, false, "running_var"));
    RETURN_IF_ERROR(per_channel(bn.weight, true, "BatchNorm weight"));
    RETURN_IF_ERROR(per_channel(bn.bias, true, "BatchNorm bias"));

    auto as_double = [&](const torch::Tensor& t, double fallback) {
      return t.defined() ? t.detach().to(weight.device(), torch::kDouble).reshape({out})
                         : torch::full({out}, fallback,
                                       torch::dtype(torch::kDouble).device(weight.device()));
    };
    torch::Tensor var_eps = as_double(bn.running_var, 0.0) + bn.eps;
    if (!(var_eps > 0).all().item<bool>()) {
      return absl::InvalidArgumentError("running_var + eps must be positive");
    }
    // g / sqrt(var + eps) is the per-channel factor BatchNorm applies at inference.
    torch::Tensor factor = as_double(bn.weight, 1.0) / var_eps.sqrt();
    std::vector<int64_t> shape(weight.dim(), 1);
    shape[0] = out;
    FoldedLayer folded;
    folded.weight =
        (weight.detach().to(torch::kDouble) * factor.reshape(shape)).to(weight.scalar_type());
    folded.bias = ((as_double(bias, 0.0) - as_double(bn.running_mean, 0.0)) * factor +
                   as_double(bn.bias, 0.0))
                      .to(weight.scalar_type());
    return folded;
  } catch (const c10::Error& e) {
    return FromTorchError(e);
  }
}

}  // namespace ompq::engine
