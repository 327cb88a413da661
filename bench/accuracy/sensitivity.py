#!/usr/bin/python3
"""A peer-style sensitivity baseline for the accuracy study (issue: allocations that beat
uniform precision): for each layer and candidate bit-width, the output noise with only that
layer's weights quantized, one forward pass each, as AIMET's AMP and MCT measure it; the
allocation minimising the summed noise under the size budget comes from the engine's own
exact solver (solve_allocation).

  sensitivity.py MODEL.pt CALIB.pt LAYERS.json OUT.json [--samples 32] [--bits 2..8]

LAYERS.json is a report.json (its "layers": name, params, macs). OUT.json gets, per layer,
noise[b] = ||y_q - y||^2 / ||y||^2 over the logits y of the first --samples calibration
inputs, where y_q has only that layer's weight quantized per output channel (asymmetric,
the same 10-ratio clipping search as the engine's distortion, quant_reference.search) at
b bits; plus the seconds it took and that time as a multiple of one forward pass.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "quant"))
import quant_reference  # noqa: E402


def quantize_rows(w, bits):
    data = w.reshape(w.shape[0], -1).astype(np.float64)
    lo0 = np.minimum(data.min(axis=1), 0.0)
    hi0 = np.maximum(data.max(axis=1), 0.0)
    scale, zero, _, _, _ = quant_reference.search(data, lo0, hi0, bits, False, 2.4,
                                                  num_candidates=10, ratio_step=0.08)
    q = quant_reference.codes(data, scale, zero, bits)
    return ((q - zero[:, None]) * scale[:, None]).reshape(w.shape)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("calib")
    p.add_argument("layers")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--bits", type=int, nargs="+", default=list(range(2, 9)))
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    net = torch.jit.load(args.model).eval()
    calib = torch.load(args.calib)
    x = (calib["inputs"] if isinstance(calib, dict) else calib)[:args.samples]
    with open(args.layers) as f:
        layers = json.load(f)["layers"]
    with torch.no_grad():
        start = time.time()
        y = net(x).double()
        forward_seconds = time.time() - start
        start = time.time()
        y = net(x).double()  # Warm.
        forward_seconds = min(forward_seconds, time.time() - start)
        energy = float((y * y).sum())
        start = time.time()
        noise = {}
        for layer in layers:
            module = net
            for part in layer["name"].split("."):
                module = getattr(module, part)
            weight = module.weight
            original = weight.detach().clone()
            table = {}
            for bits in args.bits:
                q = quantize_rows(original.numpy(), bits)
                weight.copy_(torch.from_numpy(q).to(weight.dtype))
                yq = net(x).double()
                table[str(bits)] = float(((yq - y) ** 2).sum()) / energy
            weight.copy_(original)
            noise[layer["name"]] = table
        seconds = time.time() - start
    with open(args.out, "w") as f:
        json.dump({"noise": noise, "seconds": seconds, "forward_seconds": forward_seconds,
                   "forward_multiple": seconds / forward_seconds, "samples": int(x.shape[0]),
                   "bits": args.bits}, f, indent=1)


if __name__ == "__main__":
    main()
