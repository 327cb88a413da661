#!/usr/bin/python3
"""Top-1 of a job's exported model_quantized.pt with whatever PyTorch runs this, on each
device given, against the top-1 in its report.json (written by the service's LibTorch).

  check_exported.py RUN_DIR EVAL_PT [--devices cpu cuda]

RUN_DIR holds model_quantized.pt and report.json (a study run's folder); EVAL_PT is the
eval.pt the job was evaluated on. Used on a GPU host with another PyTorch (docs/results.md).
"""
import argparse
import json
import os

import torch

from run_study import exported_top1  # the study's own measurement (same folder)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("eval_pt")
    p.add_argument("--devices", nargs="+", default=["cpu"])
    args = p.parse_args()
    with open(os.path.join(args.run_dir, "report.json")) as f:
        reported = json.load(f)["accuracy"]["quantized"]
    print(f"torch {torch.__version__}")
    for dev in args.devices:
        top1 = exported_top1(args.run_dir, args.eval_pt, dev)
        name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
        print(f"{args.run_dir} on {name}: top-1 {top1:.4f}, report {reported:.4f}, "
              f"difference {100 * (top1 - reported):+.2f} pt")


if __name__ == "__main__":
    main()
