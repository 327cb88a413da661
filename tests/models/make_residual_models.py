#!/usr/bin/python3
"""Residual models for the block discovery and BRECQ tests (tests/engine/brecq_test.cc).

Writes into OUT_DIR, from real PyTorch, seeded:
  resnet_traced.pt, resnet_scripted.pt  a small ResNet: stem, a basic block with an
      identity shortcut, one with a downsample shortcut conv (stride 2), then a plain
      conv (in no block), pooling and a classifier
  mbv2_traced.pt, mbv2_scripted.pt      MobileNetV2-style inverted residuals: one with a
      skip, one without (stride 2, no block), one more with a skip
  mbv2if_traced.pt, mbv2if_scripted.pt  the same with torchvision's form of the skip: one
      class whose forward tests `if self.use_res_connect:` (a prim::If when scripted)
  calib.pt   inputs [256, 3, 16, 16]
  eval.pt    {"inputs", "labels"}: 256 other inputs labelled by the float ResNet
  layer2_input.pt, layer2_output.pt  the float ResNet's downsample block (layer2): its
      input and output on the first 64 calibration inputs (forward hooks)
  blocks.json  {model: [[layer names of a block, execution order], ...]}, from the module
      structure (the modules built with a skip), independently of the graph
"""
import json
import os
import sys

import torch
from torch import nn

SIZE = 16


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.head = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.relu(self.head(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def conv_bn(cin, cout, kernel, stride, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """The skip is decided when the module is built (two classes), so a scripted model's
    graph has no `if` around it."""

    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        hidden = cin * expand
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1, 1), conv_bn(hidden, hidden, 3, stride, hidden),
                                  conv_bn(hidden, cout, 1, 1, act=False))

    def forward(self, x):
        return self.conv(x)


class InvertedResidualSkip(InvertedResidual):
    def forward(self, x):
        return x + self.conv(x)


class InvertedResidualIf(InvertedResidual):
    """torchvision's MobileNetV2 form: the skip decided in forward by an attribute."""

    def __init__(self, cin, cout, stride):
        super().__init__(cin, cout, stride)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, with_if=False):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 1)
        if with_if:
            blocks = [InvertedResidualIf(8, 8, 1), InvertedResidualIf(8, 16, 2),
                      InvertedResidualIf(16, 16, 1)]
        else:
            blocks = [InvertedResidualSkip(8, 8, 1), InvertedResidual(8, 16, 2),
                      InvertedResidualSkip(16, 16, 1)]
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.fc(x.mean([2, 3]))


def expected_blocks(model):
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, (BasicBlock, InvertedResidualSkip)) or (
                isinstance(module, InvertedResidualIf) and module.use_res_connect):
            blocks.append([f"{name}.{sub}" for sub, m in module.named_modules()
                           if isinstance(m, nn.Conv2d)])
    return blocks


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    calib = torch.randn(256, 3, SIZE, SIZE)
    eval_inputs = torch.randn(256, 3, SIZE, SIZE)
    blocks = {}
    for name, model in (("resnet", ResNet()), ("mbv2", MobileNetV2ish()),
                        ("mbv2if", MobileNetV2ish(with_if=True))):
        # BatchNorm statistics from data, as a trained model would have.
        model.train()
        with torch.no_grad():
            for start in range(0, 256, 64):
                model(calib[start:start + 64])
        model.eval()
        example = calib[:2]
        torch.jit.trace(model, example).save(os.path.join(out, f"{name}_traced.pt"))
        torch.jit.script(model).save(os.path.join(out, f"{name}_scripted.pt"))
        for kind in ("traced", "scripted"):
            blocks[f"{name}_{kind}"] = expected_blocks(model)
        if name == "resnet":
            seen = {}
            hook = model.layer2.register_forward_hook(
                lambda m, args, output: seen.update(input=args[0].clone(), output=output.clone()))
            with torch.no_grad():
                model(calib[:64])
                hook.remove()
                labels = model(eval_inputs).argmax(1)
            torch.save(seen["input"], os.path.join(out, "layer2_input.pt"))
            torch.save(seen["output"], os.path.join(out, "layer2_output.pt"))
            torch.save({"inputs": eval_inputs, "labels": labels}, os.path.join(out, "eval.pt"))
    torch.save(calib, os.path.join(out, "calib.pt"))
    with open(os.path.join(out, "blocks.json"), "w") as f:
        json.dump(blocks, f, indent=1)


if __name__ == "__main__":
    main()
