#!/usr/bin/python3
"""Trains (or reuses) the two models of the accuracy study on Fashion-MNIST.

  resnet     ResNet-style: BasicBlocks (conv-BN-ReLU-conv-BN + residual add), 3 stages
  mobilenet  MobileNetV2-style: inverted residual blocks (1x1 expand, 3x3 depthwise,
             1x1 project, BN, ReLU6, residual where shapes match)

Uses Debian's python3-torch and dataset-fashion-mnist through scripts/fashion_mnist.py (same
loader and normalisation as the demo). Writes into CACHE/<model> (default
~/.cache/ompq/accuracy/<model>):
  model.pt   TorchScript (torch.jit.trace, eval mode) of the trained FP32 model
  calib.pt   1024 unlabeled training images, float32 [1024,1,28,28], normalised
  eval.pt    {"inputs","labels"}: a fixed random subset of the test split (--eval-samples,
             default 5000, drawn with --seed; 10000 = the whole split, in order)
  meta.json  FP32 top-1 on the full test split and on eval.pt, epochs, training seconds
Re-running with the same arguments reuses the cached files.
Run with `nice -n 10`: the machine is shared.

On a GPU host (any PyTorch; set OMPQ_FASHION_MNIST_DIR to a copy of the dataset files):
  train_models.py mobilenet --device cuda --budget-minutes 0 --epochs 30 --export-weights DIR
writes DIR/<model>_weights.npz (the state dict as numpy arrays, readable by any PyTorch) and
DIR/<model>_train.json. Then here, with Debian's PyTorch:
  train_models.py mobilenet --import-weights DIR/<model>_weights.npz
loads them, evaluates on the test split and writes the cache files above, so the TorchScript
the study quantizes always comes from Debian's PyTorch.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from fashion_mnist import evaluate, load_split  # noqa: E402  (the demo's loader)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """Stem conv (28x28), 3 stages of BasicBlocks (14x14, 7x7, 4x4), global pool, linear.
    Downsampling in the first stage keeps a training epoch affordable on a shared CPU."""

    def __init__(self, widths=(16, 32, 64), blocks=(1, 1, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for stage, (w, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                layers.append(BasicBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = F.relu6(self.bn1(self.expand(x)))
        out = F.relu6(self.bn2(self.dw(out)))
        out = self.bn3(self.project(out))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem conv, inverted residual blocks (t, c, n, s), 1x1 head conv, pool, linear."""

    # Downsamples early (28 -> 14 in the first block): CPU training time is the budget here.
    # (28 -> 14 in the first block, 7x7 from the second stage on).
    CONFIG = ((1, 16, 1, 2), (3, 24, 2, 2), (4, 32, 2, 1), (4, 64, 2, 1))

    def __init__(self, stem=16, head=192):
        super().__init__()
        self.conv1 = nn.Conv2d(1, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks, cin = [], stem
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(cin, head, 1, bias=False)
        self.bn_head = nn.BatchNorm2d(head)
        self.fc = nn.Linear(head, 10)

    def forward(self, x):
        x = F.relu6(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        x = F.relu6(self.bn_head(self.head(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


MODELS = {"resnet": ResNet, "mobilenet": MobileNetV2}


def augment(x, pad=2):
    """Random crop with zero padding (in normalised units: the background value) and a
    random horizontal flip, per sample."""
    b, _, h, w = x.shape
    dev = x.device
    background = float(x.min())
    padded = F.pad(x, (pad, pad, pad, pad), value=background)
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]
    out = padded[torch.arange(b, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(b, device=dev) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def arch_digest(name):
    """Changes with the architecture, so that the cache is not reused across edits."""
    return hashlib.sha256(repr(MODELS[name]()).encode()).hexdigest()[:12]


def train_one(name, args):
    out_dir = os.path.join(args.cache, name)
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, "meta.json")
    # The cache is keyed by what the study depends on (architecture, data split, seed);
    # training settings are recorded in meta.json. --retrain forces a new training.
    wanted = {"model": name, "arch": arch_digest(name), "eval_samples": args.eval_samples,
              "seed": args.seed}
    reuse = not (args.retrain or args.resume or args.import_weights or args.export_weights)
    if os.path.exists(meta_path) and reuse:
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in wanted.items()) and all(
                os.path.exists(os.path.join(out_dir, n))
                for n in ("model.pt", "calib.pt", "eval.pt")):
            print(f"{name}: reusing cached model in {out_dir} "
                  f"(FP32 top-1 {meta['fp32_top1']:.4f})")
            return meta

    torch.manual_seed(args.seed)
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("t10k")
    if args.train_samples:
        train_x, train_y = train_x[:args.train_samples], train_y[:args.train_samples]

    model = MODELS[name]()
    previous = None
    if args.import_weights:
        return import_weights(name, model, args, out_dir, wanted, train_x, test_x, test_y)
    if args.resume:
        # A second OneCycle from the cached weights (when the first budget was too short).
        with open(meta_path) as f:
            previous = json.load(f)
        model.load_state_dict(torch.jit.load(os.path.join(out_dir, "model.pt")).state_dict())
        print(f"{name}: resuming from {out_dir} (FP32 top-1 {previous['fp32_top1']:.4f})")
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, {len(train_x)} training images, on {args.device}",
          flush=True)
    dev = torch.device(args.device)
    model.to(dev)
    train_x, train_y = train_x.to(dev), train_y.to(dev)
    test_x_dev, test_y_dev = test_x.to(dev), test_y.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4,
                          nesterov=True)
    steps_per_epoch = (len(train_x) + args.batch - 1) // args.batch
    total_steps = args.epochs * steps_per_epoch
    start = time.time()

    def step(x, y):
        x = x if args.no_augment else augment(x)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    if args.budget_minutes:
        # The machine is shared: time a few warm-up steps (at a low LR) and train for as
        # many steps as fit the budget, at most --epochs epochs.
        for g in opt.param_groups:
            g["lr"] = args.lr / 25
        for _ in range(args.probe_steps):
            idx = torch.randint(0, len(train_x), (args.batch,), device=dev)
            step(train_x[idx], train_y[idx])
        per_step = (time.time() - start) / args.probe_steps
        total_steps = max(min(total_steps, int(args.budget_minutes * 60 / per_step)),
                          steps_per_epoch // 2)
        print(f"{name}: {per_step:.2f} s per step -> {total_steps} steps "
              f"({total_steps / steps_per_epoch:.2f} epochs)", flush=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total_steps)
    acc, done, epoch, history = 0.0, 0, 0, []
    while done < total_steps:
        model.train()
        perm = torch.randperm(len(train_x), device=dev)
        for i in range(0, len(train_x), args.batch):
            idx = perm[i:i + args.batch]
            step(train_x[idx], train_y[idx])
            sched.step()
            done += 1
            if done % 50 == 0 and dev.type == "cpu":
                print(f"{name}: step {done}/{total_steps} ({time.time() - start:.0f} s)",
                      flush=True)
            if done >= total_steps:
                break
        epoch += 1
        acc = evaluate(model, test_x_dev, test_y_dev)
        history.append(acc)
        print(f"{name}: epoch {epoch}: test top-1 {acc:.4f} ({time.time() - start:.0f} s)",
              flush=True)
    seconds = round(time.time() - start, 1)
    model.to("cpu")
    train_x = train_x.cpu()
    facts = dict(epochs=args.epochs, budget_minutes=args.budget_minutes, lr=args.lr,
                 batch=args.batch, augment=not args.no_augment, params=params, steps=total_steps,
                 epochs_trained=round(total_steps / steps_per_epoch, 2), train_seconds=seconds,
                 train_samples=len(train_x), device=device_name(dev),
                 torch_version=torch.__version__, test_top1_per_epoch=history)
    if args.export_weights:
        os.makedirs(args.export_weights, exist_ok=True)
        np.savez(os.path.join(args.export_weights, f"{name}_weights.npz"),
                 **{k: v.numpy() for k, v in model.state_dict().items()})
        with open(os.path.join(args.export_weights, f"{name}_train.json"), "w") as f:
            json.dump(dict(wanted, fp32_top1=acc, **facts), f, indent=2)
        print(f"{name}: wrote {args.export_weights}/{name}_weights.npz (test top-1 {acc:.4f})")
        return None

    meta = write_cache(model, args, out_dir, train_x, test_x, test_y,
                       dict(wanted, fp32_top1=acc, **facts))
    if previous is not None:
        meta["previous_cycles"] = previous.get("previous_cycles", []) + [
            {k: previous.get(k) for k in ("steps", "epochs_trained", "train_seconds", "fp32_top1",
                                          "budget_minutes", "lr")}]
        meta["epochs_trained_total"] = round(meta["epochs_trained"] + sum(
            c["epochs_trained"] for c in meta["previous_cycles"]), 2)
        meta["train_seconds_total"] = round(seconds + sum(
            c["train_seconds"] for c in meta["previous_cycles"]), 1)
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=2)
    return meta


def device_name(dev):
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def import_weights(name, model, args, out_dir, wanted, train_x, test_x, test_y):
    """Weights trained elsewhere (--export-weights): loaded into the model defined here,
    evaluated here on the full test split, traced with this PyTorch."""
    arrays = np.load(args.import_weights)
    # strict: every name and shape must match the architecture defined here.
    model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files})
    facts_path = args.import_weights.replace("_weights.npz", "_train.json")
    facts = {}
    if os.path.exists(facts_path):
        with open(facts_path) as f:
            facts = json.load(f)
    reported = facts.pop("fp32_top1", None)
    acc = evaluate(model, test_x, test_y)
    print(f"{name}: imported {args.import_weights}: test top-1 {acc:.4f} here "
          f"({reported} where it was trained)", flush=True)
    facts.update(wanted, fp32_top1=acc, fp32_top1_where_trained=reported,
                 imported_from=os.path.basename(args.import_weights))
    return write_cache(model, args, out_dir, train_x, test_x, test_y, facts)


def write_cache(model, args, out_dir, train_x, test_x, test_y, meta):
    """model.pt (traced here), calib.pt, eval.pt and meta.json."""
    name = meta["model"]
    model.eval()
    traced = torch.jit.trace(model, train_x[:2])
    traced.save(os.path.join(out_dir, "model.pt"))
    gen = torch.Generator().manual_seed(args.seed + 1)
    calib_idx = torch.randperm(len(train_x), generator=gen)[:1024]
    torch.save(train_x[calib_idx].contiguous(), os.path.join(out_dir, "calib.pt"))
    if args.eval_samples >= len(test_x):
        eval_idx = torch.arange(len(test_x))
    else:
        gen = torch.Generator().manual_seed(args.seed + 2)
        eval_idx = torch.randperm(len(test_x), generator=gen)[:args.eval_samples].sort().values
    eval_x, eval_y = test_x[eval_idx].contiguous(), test_y[eval_idx].contiguous()
    torch.save({"inputs": eval_x, "labels": eval_y}, os.path.join(out_dir, "eval.pt"))
    meta["fp32_top1_eval_subset"] = evaluate(traced, eval_x, eval_y)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"{name}: wrote {out_dir} (FP32 top-1 {meta['fp32_top1']:.4f} full test split, "
          f"{meta['fp32_top1_eval_subset']:.4f} on eval.pt)", flush=True)
    return meta


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/ompq/accuracy"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.2, help="OneCycle peak learning rate")
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--train-samples", type=int, default=0, help="0: all 60000")
    parser.add_argument("--augment", dest="no_augment", action="store_false",
                        help="random crop (padding 2) and horizontal flip; off by default: "
                             "with a few epochs it slows convergence more than it helps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="ignore the cache")
    parser.add_argument("--resume", action="store_true",
                        help="train the cached model further (one more OneCycle)")
    parser.add_argument("--threads", type=int, default=1,
                        help="1: on a loaded machine OpenMP barriers waste more than a 2nd "
                             "thread gains; train the two models in parallel instead")
    parser.add_argument("--budget-minutes", type=float, default=20,
                        help="train for as many steps as fit (timed on --probe-steps); 0: all "
                             "--epochs")
    parser.add_argument("--probe-steps", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--export-weights", metavar="DIR",
                        help="train, then write DIR/<model>_weights.npz and _train.json only")
    parser.add_argument("--import-weights", metavar="NPZ",
                        help="no training: load weights written by --export-weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        train_one(name, args)


if __name__ == "__main__":
    main()
