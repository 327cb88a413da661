#!/usr/bin/python3
"""Builds the inputs of the end-to-end test: a small traced CNN, a calibration batch (and
a big one for a long search), a file that is not a TorchScript archive, and the model's
size at uniform 2 and 8 bits.

Usage: make_model.py OUT_DIR   (prints {"size_2bit": int, "size_8bit": int} on stdout)

Sizes follow PRODUCT.md/ALGORITHM.md: quantized weights take bits/8 bytes per element,
every other parameter 4 bytes; the first and last layers stay pinned at 8 bits (the
default), so "2-bit" means every other layer at 2 bits.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.bn3 = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def sizes(model):
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = {id(m.weight) for m in layers}
    other = sum(4 * p.numel() for p in model.parameters() if id(p) not in weights)

    def size_at(bits_of_middle):
        bits = [8] + [bits_of_middle] * (len(layers) - 2) + [8]
        return math.ceil(sum(m.weight.numel() * b for m, b in zip(layers, bits)) / 8) + other

    return {"size_2bit": size_at(2), "size_8bit": size_at(8), "layers": len(layers)}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = SmallCnn().eval()
    calib = torch.randn(32, 3, 16, 16)
    traced = torch.jit.trace(model, calib[:2])
    traced.save(os.path.join(out, "model.pt"))
    torch.save(calib, os.path.join(out, "calib.pt"))
    # Eval data labelled by the float model itself: its top-1 is exactly 1, so the
    # service's evaluation has a known answer.
    eval_inputs = torch.randn(200, 3, 16, 16)
    with torch.no_grad():
        eval_labels = model(eval_inputs).argmax(1)
    torch.save({"inputs": eval_inputs, "labels": eval_labels}, os.path.join(out, "eval.pt"))
    # Enough larger inputs that a search runs for seconds: time to cancel it mid-run.
    torch.save(torch.randn(512, 3, 96, 96), os.path.join(out, "big_calib.pt"))
    # A torch.save()d state_dict: the classic mistake instead of a TorchScript export.
    torch.save(model.state_dict(), os.path.join(out, "state_dict.pt"))
    print(json.dumps(sizes(model)))


if __name__ == "__main__":
    main()
