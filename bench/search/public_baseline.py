#!/usr/bin/python3
"""The public OMPQ code's way of searching, written from ALGORITHM.md, as the baseline
for bench_search: eager PyTorch with forward hooks that keep every layer's features, the
ORM matrix by linear CKA where every pair recomputes both Gram matrices (three HSICs, six
Grams per pair), then scipy SLSQP on the relaxed program and plain rounding.

Generous to the baseline: features and Grams stay float32 (faster than float64), only
pairs i < j are computed (the matrix is symmetric), and threads = cores.

Usage: public_baseline.py MODEL.pt CALIB.pt [--samples 32] [--size BYTES] [--beta 1.0]
MODEL.pt is a traced torchvision model named after its architecture (resnet18.pt); its
weights are loaded into the eager torchvision module. Prints one JSON line at the end.
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import scipy.optimize
import torch
import torch.nn as nn
import torchvision


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def centering(k):
    n = k.shape[0]
    h = np.eye(n, dtype=k.dtype) - np.ones((n, n), dtype=k.dtype) / n
    return h @ k @ h


def linear_hsic(x, y):
    return np.sum(centering(x @ x.T) * centering(y @ y.T))


def linear_cka(x, y):
    return linear_hsic(x, y) / np.sqrt(linear_hsic(x, x) * linear_hsic(y, y))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("calib")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--beta", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    base_rss = rss_mib()

    start = time.perf_counter()
    traced = torch.jit.load(args.model)
    arch = os.path.splitext(os.path.basename(args.model))[0]
    model = getattr(torchvision.models, arch)()
    model.load_state_dict(traced.state_dict())
    model.eval()
    del traced
    inputs = torch.load(args.calib)[: args.samples]
    load_seconds = time.perf_counter() - start

    # Reference: one plain forward pass of the same batch (not part of the total).
    with torch.no_grad():
        t = time.perf_counter()
        model(inputs)
        forward_seconds = time.perf_counter() - t

    t = time.perf_counter()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    features = {}

    def hook(module, _inputs, output):
        if module not in features:
            features[module] = output.detach().reshape(output.shape[0], -1).numpy()

    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model(inputs)
    for handle in handles:
        handle.remove()
    feats = [features[m] for m in layers]
    features_seconds = time.perf_counter() - t

    t = time.perf_counter()
    count = len(feats)
    orm = np.eye(count)
    for i in range(count):
        for j in range(i + 1, count):
            orm[i, j] = orm[j, i] = linear_cka(feats[i], feats[j])
    gamma = orm.sum(axis=1) - 1
    theta = np.exp(-args.beta * (gamma - gamma.min()))
    coefficient = np.array([theta[i:].mean() for i in range(count)])
    orm_seconds = time.perf_counter() - t

    t = time.perf_counter()
    params = np.array([m.weight.numel() for m in layers], dtype=np.float64)
    other_bytes = 4 * (sum(p.numel() for p in model.parameters()) - params.sum())
    budget = args.size or (params.sum() * 4 / 8 + other_bytes)
    bounds = [(2, 8)] * count
    bounds[0] = bounds[-1] = (8, 8)
    result = scipy.optimize.minimize(
        lambda b: -coefficient @ b, np.full(count, 8.0), jac=lambda b: -coefficient,
        method="SLSQP", bounds=bounds,
        constraints=[{"type": "ineq", "fun": lambda b: budget - (params @ b / 8 + other_bytes),
                      "jac": lambda b: -params / 8}])
    bits = np.round(result.x).astype(int)
    slsqp_seconds = time.perf_counter() - t
    total_seconds = load_seconds + features_seconds + orm_seconds + slsqp_seconds

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "layers": count, "load_seconds": load_seconds, "forward_seconds": forward_seconds,
        "features_seconds": features_seconds, "orm_seconds": orm_seconds,
        "slsqp_seconds": slsqp_seconds, "total_seconds": total_seconds,
        "peak_rss_mib": peak, "base_rss_mib": base_rss,
        "size_bytes": float(params @ bits / 8 + other_bytes), "budget": float(budget),
        "slsqp_success": bool(result.success)}))


if __name__ == "__main__":
    main()
