#!/usr/bin/python3
"""Inputs for the quantization tests (tests/engine/quantize_test.cc), from real PyTorch.

Trains scripts/fashion_mnist.py's small CNN briefly on a Fashion-MNIST subset (Debian's
dataset-fashion-mnist) into OUT_DIR (model.pt, calib.pt, eval.pt, cached), then writes the
bad eval files the tests expect to be refused:
  eval_unlabelled.pt   a bare tensor (no labels)
  eval_bad_labels.pt   labels 10..19 for a 10-class model
  eval_wrong_shape.pt  labelled inputs of shape [N, 3, 28, 28] the model rejects
and the QAT training data (tests/engine/qat_test.cc):
  train.pt             2000 labelled Fashion-MNIST training images the model was not
                       trained on (samples 6000..7999 of the train split), normalised
  train_bad_labels.pt  the first 64 of them with labels 10..19
"""
import importlib.util
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

    spec = importlib.util.spec_from_file_location("fashion_mnist", SCRIPT)
    fashion_mnist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fashion_mnist)
    train_x, train_y = fashion_mnist.load_split("train")
    # clone(): a slice would save the whole split's storage.
    train_x, train_y = train_x[6000:8000].clone(), train_y[6000:8000].clone()
    torch.save({"inputs": train_x, "labels": train_y}, os.path.join(out, "train.pt"))
    torch.save({"inputs": train_x[:64].clone(), "labels": train_y[:64] + 10},
               os.path.join(out, "train_bad_labels.pt"))


if __name__ == "__main__":
    main()
