#include "workers/engine/layer_distortion.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace ompq::engine {
namespace {

absl::Status FromTorch(const c10::Error& e) {
  return absl::InternalError(absl::StrCat("distortion: ", e.what_without_backtrace()));
}

// h_k for every element of `weight` ([O, C/groups, ...] or [O, C]), broadcastable to it:
// output channel o of group g reads input channels g*C/groups ...
absl::StatusOr<torch::Tensor> EnergyPerWeight(const torch::Tensor& weight,
                                              const torch::Tensor& energy) {
  const int64_t out = weight.size(0);
  const int64_t per_group = weight.dim() >= 2 ? weight.size(1) : 1;
  const int64_t channels = energy.numel();
  if (weight.dim() < 2 || per_group == 0 || channels % per_group != 0 ||
      out % (channels / per_group) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a weight of shape [", absl::StrJoin(weight.sizes(), ", "),
                     "] does not read ", channels, " input channels"));
  }
  const int64_t groups = channels / per_group;
  torch::Tensor rows =
      energy.reshape({groups, 1, per_group}).expand({groups, out / groups, per_group});
  std::vector<int64_t> shape{out, per_group};
  for (int64_t d = 2; d < weight.dim(); ++d) shape.push_back(1);
  return rows.reshape(shape);
}

}  // namespace

int64_t DistortionRowStride(int64_t rows, int64_t row_size) {
  const int64_t wanted = std::max<int64_t>(
      1, (kDistortionElements + std::max<int64_t>(row_size, 1) - 1) / std::max<int64_t>(row_size, 1));
  return std::max<int64_t>(1, (rows + wanted - 1) / wanted);
}

QuantizerOptions DistortionQuantizerOptions(int bits, ExportProfile profile) {
  QuantizerOptions options = WeightQuantizerOptions(bits, profile);
  options.num_candidates = 10;
  options.ratio_step = 0.08;
  return options;
}

torch::Tensor InputChannelEnergy(const torch::Tensor& input, bool linear) {
  torch::NoGradGuard no_grad;
  // The first samples only, where a layer's input is large: a channel's mean square over
  // millions of values does not need more, and the pass stays light.
  torch::Tensor x = input;
  if (x.dim() >= 2 && x.numel() > kEnergyElements) {
    const int64_t per_sample = std::max<int64_t>(1, x.numel() / x.size(0));
    x = x.narrow(0, 0, std::clamp<int64_t>(kEnergyElements / per_sample, 1, x.size(0)));
  }
  const int64_t channel_dim = linear ? x.dim() - 1 : std::min<int64_t>(1, x.dim() - 1);
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d != channel_dim) dims.push_back(d);
  }
  torch::Tensor squares = x.detach().to(torch::kFloat).square();
  torch::Tensor sums = dims.empty() ? squares.to(torch::kDouble)
                                    : squares.sum(dims, /*keepdim=*/false, torch::kDouble);
  const double count = static_cast<double>(x.numel()) / std::max<int64_t>(sums.numel(), 1);
  return (sums / std::max(count, 1.0)).to(torch::kCPU);
}

absl::StatusOr<std::vector<double>> LayerDistortion(const torch::Tensor& weight,
                                                    const torch::Tensor& input_energy,
                                                    const std::vector<int>& bits,
                                                    ExportProfile profile) {
  if (!weight.defined() || weight.dim() < 2) {
    return absl::InvalidArgumentError("distortion: a weight [O, C, ...] is needed");
  }
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor w = weight.detach().to(torch::kCPU, torch::kFloat);
    // An input the hook could not measure (not floating point) weighs every element alike.
    torch::Tensor h = torch::ones_like(w);
    if (input_energy.defined()) {
      ASSIGN_OR_RETURN(h, EnergyPerWeight(w, input_energy.to(torch::kCPU, torch::kFloat)));
    }
    // Every stride-th output channel: each is quantized on its own grid, so a subset of
    // whole channels estimates both sums without bias.
    const int64_t rows = w.size(0);
    const int64_t stride = DistortionRowStride(rows, w.numel() / std::max<int64_t>(1, rows));
    if (stride > 1) {
      h = h.expand(w.sizes()).slice(0, 0, rows, stride);
      w = w.slice(0, 0, rows, stride);
    }
    const double energy = (w.square() * h).sum(torch::kDouble).item<double>();
    std::vector<double> distortion;
    distortion.reserve(bits.size());
    for (int b : bits) {
      if (!(energy > 0)) {
        distortion.push_back(0.0);
        continue;
      }
      ASSIGN_OR_RETURN(QuantParams params,
                       FitWeightQuantizer(w, DistortionQuantizerOptions(b, profile)));
      ASSIGN_OR_RETURN(torch::Tensor quantized, QuantizeDequantize(w, params));
      const double error = ((quantized - w).square() * h).sum(torch::kDouble).item<double>();
      const double d = error / energy;
      // Non-increasing in b: a finer grid that happens to measure worse is not believed.
      distortion.push_back(distortion.empty() ? d : std::min(d, distortion.back()));
    }
    return distortion;
  } catch (const c10::Error& e) {
    return FromTorch(e);
  }
}

absl::StatusOr<std::vector<std::vector<double>>> LayerDistortions(
    const std::vector<torch::Tensor>& weights, const std::vector<torch::Tensor>& input_energy,
    const std::vector<std::vector<int>>& bits, ExportProfile profile) {
  if (weights.size() != input_energy.size() || weights.size() != bits.size()) {
    return absl::InvalidArgumentError("distortion: one weight, energy and bit list per layer");
  }
  const size_t n = weights.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return weights[a].numel() * bits[a].size() > weights[b].numel() * bits[b].size();
  });
  std::vector<absl::StatusOr<std::vector<double>>> results(n, std::vector<double>{});
  std::atomic<size_t> next{0};
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  // Each layer on one thread, largest first (as the PTQ weight fits): inside the parallel
  // region LibTorch runs each op on the calling thread alone.
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (size_t k = next++; k < n; k = next++) {
      results[order[k]] =
          LayerDistortion(weights[order[k]], input_energy[order[k]], bits[order[k]], profile);
    }
  });
  std::vector<std::vector<double>> out;
  out.reserve(n);
  for (auto& result : results) {
    RETURN_IF_ERROR(result.status());
    out.push_back(*std::move(result));
  }
  return out;
}

}  // namespace ompq::engine
