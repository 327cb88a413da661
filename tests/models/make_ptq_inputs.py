#!/usr/bin/python3
"""Inputs for the quantization tests (tests/engine/quantize_test.cc), from real PyTorch.

Trains scripts/fashion_mnist.py's small CNN briefly on a Fashion-MNIST subset (Debian's
dataset-fashion-mnist) into OUT_DIR (model.pt, calib.pt, eval.pt, cached), then writes the
bad eval files the tests expect to be refused:
  eval_unlabelled.pt   a bare tensor (no labels)
  eval_bad_labels.pt   labels 10..19 for a 10-class model
  eval_wrong_shape.pt  labelled inputs of shape [N, 3, 28, 28] the model rejects
"""
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "fashion_mnist.py")


def main():
    out = sys.argv[1]
    subprocess.run([sys.executable, SCRIPT, out, "--epochs", "1", "--train-samples", "6000",
                    "--eval-samples", "500"], check=True)
    data = torch.load(os.path.join(out, "eval.pt"))
    inputs, labels = data["inputs"], data["labels"]
    torch.save(inputs[:64].clone(), os.path.join(out, "eval_unlabelled.pt"))
    torch.save({"inputs": inputs[:64].clone(), "labels": labels[:64] + 10},
               os.path.join(out, "eval_bad_labels.pt"))
    torch.save({"inputs": inputs[:64].repeat(1, 3, 1, 1), "labels": labels[:64].clone()},
               os.path.join(out, "eval_wrong_shape.pt"))


if __name__ == "__main__":
    main()
