#!/usr/bin/python3
"""Checks a job's model_quantized.pt and encodings.json in Python, independently of C++.

Usage: check_quantized_model.py ARTIFACT_DIR EVAL_PT
- torch.jit.load loads the model; its top-1 on EVAL_PT equals report.json's
  accuracy.quantized within 0.1 pt;
- its graph fake-quantizes activations (aten::fake_quantize_per_tensor_affine), one per
  quantized activation encoding;
- every weight listed in encodings.json lies on its per-channel grid: (w / scale - offset)
  is an integer in [0, 2^bitwidth - 1];
- model_quantized.onnx was exported (report.json export.onnx) and ONNX Runtime
  (onnxruntime-node, tests/engine/run_onnx.js) runs it on the eval inputs: its top-1 equals
  the report's within 0.1 pt, it agrees with the TorchScript model's top-1 on at least 99%
  of the samples, and its largest output difference is printed in units of the
  TorchScript outputs' standard deviation.
Exits non-zero with a message on the first failed check.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

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
    check_onnx(art, report, model, data)


def check_onnx(art, report, model, data):
    onnx_report = report.get("export", {}).get("onnx", {})
    if onnx_report.get("status") != "exported":
        fail(f"model_quantized.onnx was not exported: {onnx_report}")
    path = os.path.join(art, "model_quantized.onnx")
    if not os.path.exists(path):
        fail("report.json says exported but model_quantized.onnx is missing")
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_onnx.js")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "inputs.npy")
        outputs = os.path.join(tmp, "outputs.npy")
        np.save(inputs, data["inputs"].float().numpy())
        done = subprocess.run(["node", runner, path, inputs, outputs], capture_output=True,
                              text=True)
        if done.returncode != 0:
            fail(f"ONNX Runtime could not run the model: {done.stderr.strip()}")
        onnx_out = torch.from_numpy(np.load(outputs))
    with torch.no_grad():
        torch_out = torch.cat([model(data["inputs"][i:i + 128])
                               for i in range(0, len(data["inputs"]), 128)])
    if onnx_out.shape != torch_out.shape:
        fail(f"ONNX output {tuple(onnx_out.shape)} against TorchScript {tuple(torch_out.shape)}")
    onnx_top1 = (onnx_out.argmax(1) == data["labels"]).double().mean().item()
    agreement = (onnx_out.argmax(1) == torch_out.argmax(1)).double().mean().item()
    spread = torch_out.std().item()
    largest = (onnx_out - torch_out).abs().max().item() / max(spread, 1e-12)
    reported = report["accuracy"]["quantized"]
    print(f"onnx: top-1 {onnx_top1:.4f} (report {reported:.4f}), top-1 agreement with "
          f"TorchScript {agreement:.4f}, largest output difference {largest:.4f} output "
          f"standard deviations")
    if abs(onnx_top1 - reported) > 0.001 + 1e-9:
        fail(f"ONNX Runtime top-1 {onnx_top1:.4f} differs from the report's {reported:.4f}")
    if agreement < 0.99:
        fail(f"ONNX and TorchScript agree on the top-1 of only {agreement:.4f} of the samples")


if __name__ == "__main__":
    main()
