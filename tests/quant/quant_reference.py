#!/usr/bin/python3
"""Expected values for tests/quant: the clipping search of workers/engine/quantizer.h,
recomputed independently with numpy in float64 on fixed tensors.

Usage: quant_reference.py OUT.json. The tensors are written too (exact decimal floats), so
the C++ test quantizes the very same numbers.
"""
import json
import sys

import numpy as np

MIN_SCALE = 1e-8


def search(data, lo0, hi0, bits, symmetric, p, num_candidates=80, ratio_step=0.01):
    """data [C, M]; lo0/hi0 [C] already widened to include 0. Returns the chosen scale,
    zero point and k per channel, and every candidate's scale and loss ([K, C])."""
    qmax = float(2**bits - 1)
    best_loss = np.full(data.shape[0], np.inf)
    best_scale = np.ones(data.shape[0])
    best_zero = np.zeros(data.shape[0])
    best_k = np.zeros(data.shape[0], dtype=np.int64)
    all_scales, all_losses = [], []
    for k in range(num_candidates):
        r = 1.0 - k * ratio_step
        lo, hi = lo0 * r, hi0 * r
        if symmetric:
            scale = np.maximum(2.0 * np.maximum(-lo, hi) / qmax, MIN_SCALE)
            zero = np.full_like(scale, float(2 ** (bits - 1)))
        else:
            scale = np.maximum((hi - lo) / qmax, MIN_SCALE)
            zero = np.clip(np.round(-lo / scale), 0.0, qmax)
        s, z = scale[:, None], zero[:, None]
        q = np.clip(np.round(data / s) + z, 0.0, qmax)
        loss = (np.abs((q - z) * s - data) ** p).sum(axis=1)
        better = loss < best_loss  # strict: the first minimum wins
        best_loss = np.where(better, loss, best_loss)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
        best_k = np.where(better, k, best_k)
        all_scales.append(scale)
        all_losses.append(loss)
    return (best_scale, best_zero.astype(np.int64), best_k, np.array(all_scales),
            np.array(all_losses))


def codes(data, scale, zero, bits):
    qmax = float(2**bits - 1)
    return np.clip(np.round(data / scale[:, None]) + zero[:, None], 0.0, qmax).astype(np.int64)


def weight_case(name, w, bits, p, symmetric=False):
    data = w.reshape(w.shape[0], -1)
    lo0 = np.minimum(data.min(axis=1), 0.0)
    hi0 = np.maximum(data.max(axis=1), 0.0)
    scale, zero, k, scales, losses = search(data, lo0, hi0, bits, symmetric, p)
    return {"tensor": name, "bits": bits, "p": p, "symmetric": symmetric,
            "scale": scale.tolist(), "zero_point": zero.tolist(), "k": k.tolist(),
            "codes": codes(data, scale, zero, bits).reshape(-1).tolist(),
            "candidate_scales": scales.tolist(), "candidate_losses": losses.tolist()}


def activation_case(name, x, bits, p, symmetric=False, max_search_elements=1 << 20):
    flat = x.reshape(-1)
    lo0 = np.array([min(flat.min(), 0.0)])
    hi0 = np.array([max(flat.max(), 0.0)])
    n = flat.size
    if n > max_search_elements:
        stride = -(-n // max_search_elements)
        flat = flat[::stride]
    scale, zero, k, scales, losses = search(flat[None, :], lo0, hi0, bits, symmetric, p)
    return {"tensor": name, "bits": bits, "p": p, "symmetric": symmetric,
            "max_search_elements": max_search_elements,
            "scale": float(scale[0]), "zero_point": int(zero[0]), "k": int(k[0]),
            "candidate_scales": scales[:, 0].tolist(), "candidate_losses": losses[:, 0].tolist()}


def main():
    rng = np.random.RandomState(20240607)
    tensors = {}

    # Conv weight [6, 3, 3, 3]: channels of different ranges, one with a large outlier
    # (the search should clip it), one all positive, one all zero.
    conv = rng.randn(6, 3, 3, 3) * np.array([0.05, 0.2, 1.0, 0.5, 0.3, 1.0])[:, None, None, None]
    conv[0, 1, 1, 1] = 0.6  # 12 standard deviations
    conv[4] = np.abs(conv[4]) + 0.01
    conv[5] = 0.0
    tensors["conv_w"] = conv
    # Linear weight [8, 20], heavy tailed.
    tensors["linear_w"] = rng.laplace(scale=0.1, size=(8, 20))
    # Activations: after a ReLU (unsigned), signed and shifted, centred, and a large one.
    tensors["relu_act"] = np.maximum(rng.randn(4, 5, 6, 6), 0.0)
    tensors["signed_act"] = rng.randn(4, 50) * 2.0 + 0.5
    tensors["centred_act"] = rng.randn(300)
    big = rng.randn(5003)
    big[1] = 9.0   # the extreme values sit off the stride-6 subset, but still set the range
    big[2] = -7.0
    tensors["big_act"] = big
    # The engine quantizes float32 tensors: keep every value float32-representable so both
    # sides start from the same numbers.
    tensors = {k: v.astype(np.float32).astype(np.float64) for k, v in tensors.items()}
    conv, big = tensors["conv_w"], tensors["big_act"]

    weights = [weight_case("conv_w", conv, b, 2.4) for b in (2, 3, 4, 8)]
    weights.append(weight_case("conv_w", conv, 4, 2.0))
    weights.append(weight_case("conv_w", conv, 4, 2.4, symmetric=True))
    weights.append(weight_case("linear_w", tensors["linear_w"], 3, 2.0))
    weights.append(weight_case("linear_w", tensors["linear_w"], 1, 2.4))

    acts = [activation_case("relu_act", tensors["relu_act"], b, 2.4) for b in (4, 8)]
    acts.append(activation_case("signed_act", tensors["signed_act"], 8, 2.4))
    acts.append(activation_case("signed_act", tensors["signed_act"], 3, 2.0))
    acts.append(activation_case("centred_act", tensors["centred_act"], 8, 2.4, symmetric=True))
    acts.append(activation_case("big_act", big, 4, 2.4, max_search_elements=1000))

    doc = {"tensors": {k: {"shape": list(v.shape), "values": v.reshape(-1).tolist()}
                       for k, v in tensors.items()},
           "weights": weights, "activations": acts}
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
