#!/usr/bin/python3
"""Writes the benchmark inputs: traced torchvision models (random, seeded weights;
BatchNorm statistics from a few train-mode batches) and a calibration batch of 32
ImageNet-sized images.

Usage: make_inputs.py OUT_DIR [MODEL ...]   (default resnet18 mobilenet_v2; skips files
that already exist)
"""
import os
import sys

import torch
import torchvision


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    calib = os.path.join(out, "calib_224.pt")
    if not os.path.exists(calib):
        torch.save(torch.randn(32, 3, 224, 224), calib)
    for name in sys.argv[2:] or ("resnet18", "mobilenet_v2"):
        path = os.path.join(out, name + ".pt")
        if os.path.exists(path):
            continue
        torch.manual_seed(1)
        model = getattr(torchvision.models, name)()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, 3, 224, 224))
        model.eval()
        torch.jit.trace(model, torch.randn(2, 3, 224, 224)).save(path)
    print("benchmark inputs in", out)


if __name__ == "__main__":
    main()
