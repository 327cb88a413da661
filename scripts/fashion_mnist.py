#!/usr/bin/python3
"""Trains (or reuses) a small CNN on Fashion-MNIST and exports what ompq needs.

Uses Debian's python3-torch and dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
Writes into OUT_DIR:
  model.pt   TorchScript (torch.jit.trace) of the trained FP32 model
  calib.pt   1024 unlabeled training images, float32 [N,1,28,28], normalised
  eval.pt    {"inputs": [M,1,28,28], "labels": int64 [M]} from the test split
  meta.json  training facts (epochs, FP32 test top-1)
Re-running with the same arguments reuses the cached files.
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# OMPQ_FASHION_MNIST_DIR: a copy of the files elsewhere (e.g. on a GPU host without the package).
DATA_DIR = os.environ.get("OMPQ_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set statistics.


def read_idx(name):
    with gzip.open(os.path.join(DATA_DIR, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind):
    images = read_idx(f"{kind}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
    images = (images - MEAN) / STD
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks and two linear layers: 6 quantizable layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1, groups=4, bias=False)
        self.bn4 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(F.relu(self.bn4(self.conv4(x))), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def evaluate(model, images, labels, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            correct += (model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
    return correct / len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=30000)
    parser.add_argument("--eval-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    meta_path = os.path.join(args.out_dir, "meta.json")
    wanted = {"epochs": args.epochs, "train_samples": args.train_samples,
              "eval_samples": args.eval_samples, "seed": args.seed}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in wanted.items()) and all(
                os.path.exists(os.path.join(args.out_dir, n))
                for n in ("model.pt", "calib.pt", "eval.pt")):
            print(f"reusing cached model in {args.out_dir} (FP32 top-1 {meta['fp32_top1']:.4f})")
            return

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("t10k")
    train_x, train_y = train_x[:args.train_samples], train_y[:args.train_samples]

    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * ((len(train_x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train_x))
        for i in range(0, len(train_x), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs}: test top-1 {acc:.4f} ({time.time() - start:.0f} s)",
              flush=True)

    model.eval()
    traced = torch.jit.trace(model, train_x[:2])
    traced.save(os.path.join(args.out_dir, "model.pt"))
    gen = torch.Generator().manual_seed(args.seed + 1)
    calib_idx = torch.randperm(len(train_x), generator=gen)[:1024]
    torch.save(train_x[calib_idx].contiguous(), os.path.join(args.out_dir, "calib.pt"))
    torch.save({"inputs": test_x[:args.eval_samples].contiguous(),
                "labels": test_y[:args.eval_samples].contiguous()},
               os.path.join(args.out_dir, "eval.pt"))
    meta = dict(wanted, fp32_top1=acc, train_seconds=round(time.time() - start, 1))
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {args.out_dir}: model.pt calib.pt eval.pt (FP32 top-1 {acc:.4f})")


if __name__ == "__main__":
    main()
