#!/usr/bin/python3
"""Checks a job's model_quantized.pt and encodings.json in Python, independently of C++.

Usage: check_quantized_model.py ARTIFACT_DIR EVAL_PT
- torch.jit.load loads the model; its top-1 on EVAL_PT equals report.json's
  accuracy.quantized within 0.1 pt;
- its graph fake-quantizes activations (aten::fake_quantize_per_tensor_affine), one per
  quantized activation encoding;
- every weight listed in encodings.json lies on its per-channel grid: (w / scale - offset)
  is an integer in [0, 2^bitwidth - 1].
Exits non-zero with a message on the first failed check.
"""
import json
import os
import sys

import torch


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def main():
    art, eval_path = sys.argv[1], sys.argv[2]
    report = json.load(open(os.path.join(art, "report.json")))
    encodings = json.load(open(os.path.join(art, "encodings.json")))
    model = torch.jit.load(os.path.join(art, "model_quantized.pt"))
    model.eval()
    data = torch.load(eval_path)
    with torch.no_grad():
        predicted = torch.cat([model(data["inputs"][i:i + 128]).argmax(1)
                               for i in range(0, len(data["inputs"]), 128)])
    top1 = (predicted == data["labels"]).double().mean().item()
    reported = report["accuracy"]["quantized"]
    if abs(top1 - reported) > 0.001:
        fail(f"python top-1 {top1:.4f} differs from the report's {reported:.4f}")

    graph = str(model.inlined_graph)
    fake_quant = graph.count("aten::fake_quantize_per_tensor_affine")
    if fake_quant != len(encodings["activation_encodings"]):
        fail(f"{fake_quant} fake-quantize ops for {len(encodings['activation_encodings'])} "
             "activation encodings")

    state = model.state_dict()
    for name, channels in encodings["param_encodings"].items():
        if name not in state:
            fail(f"encodings name {name}, not in the model's state_dict")
        w = state[name].double()
        scale = torch.tensor([c["scale"] for c in channels], dtype=torch.double)
        offset = torch.tensor([c["offset"] for c in channels], dtype=torch.double)
        bits = channels[0]["bitwidth"]
        shape = [-1] + [1] * (w.dim() - 1)
        codes = w / scale.view(shape) - offset.view(shape)
        if (codes - codes.round()).abs().max().item() > 1e-2:
            fail(f"{name}: weights are not on their quantization grid")
        if codes.round().min().item() < 0 or codes.round().max().item() > 2 ** bits - 1:
            fail(f"{name}: codes outside [0, 2^{bits} - 1]")
    print(f"ok: python top-1 {top1:.4f} (report {reported:.4f}), {fake_quant} activation "
          f"quantizers, {len(encodings['param_encodings'])} weights on their grids")


if __name__ == "__main__":
    main()
