#!/usr/bin/python3
"""The accuracy study's models through the real service in both export profiles, and their
model_quantized.onnx in ONNX Runtime against the report (docs/results.md, "ONNX Runtime on
the study models").

  check_onnx.py [--models mobilenet] [--act-bits 8 4] [--profiles default tensorrt]

For each model (train_models.py's cache, default ~/.cache/ompq/accuracy/<model>), activation
width and profile: one PTQ job (ompqctl quantize, the study's settings: --iters 200,
--calib-samples 512, first/last layer at 8 bits) at a size budget of --mean-bits weight
bits per quantized parameter, then tests/engine/check_quantized_model.py on its artifacts
(model_quantized.pt and model_quantized.onnx against report.json's top-1; onnxruntime-node
from scripts/onnxruntime.sh). Prints one line per run and exits non-zero if any check fails.
"""
import argparse
import json
import os
import subprocess
import sys

from run_study import DEFAULT_CACHE, REPO, Server  # the study's own server (same folder)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", default=os.path.join(REPO, "build", "bin"))
    p.add_argument("--cache", default=DEFAULT_CACHE, help="train_models.py's cache")
    p.add_argument("--work", default=os.path.join(DEFAULT_CACHE, "onnx-runs"))
    p.add_argument("--models", nargs="+", default=["mobilenet"])
    p.add_argument("--act-bits", type=int, nargs="+", default=[8, 4])
    p.add_argument("--profiles", nargs="+", default=["default", "tensorrt"])
    p.add_argument("--mean-bits", type=float, default=4.0)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--calib-samples", type=int, default=512)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMPQ_ONNXRUNTIME_NODE",
                   os.path.join(REPO, "build", "onnxruntime", "node_modules"))
    server = Server(args.bin_dir, args.work, 2)
    failed = 0
    try:
        for model in args.models:
            data = os.path.join(args.cache, model)
            for act in args.act_bits:
                for profile in args.profiles:
                    out = os.path.join(args.work, model, f"{profile}_a{act}")
                    ctl = [os.path.join(args.bin_dir, "ompqctl"), "--server", server.address]
                    if not os.path.exists(os.path.join(out, "report.json")):
                        # The budget: mean_bits per parameter of the layers a search finds.
                        probe = subprocess.run(
                            ctl + ["--output", "json", "quantize", os.path.join(data, "model.pt"),
                                   "--calib", os.path.join(data, "calib.pt"), "--size", "1GiB",
                                   "--finetune", "none", "--out", out + ".probe"],
                            capture_output=True, text=True)
                        if probe.returncode != 0:
                            sys.exit(f"probe of {model} failed:\n{probe.stderr[-2000:]}")
                        with open(os.path.join(out + ".probe", "report.json")) as f:
                            m = json.load(f)["model"]
                        size = int(m["quantized_parameters"] * args.mean_bits / 8 +
                                   m["other_bytes"])
                        done = subprocess.run(
                            ctl + ["quantize", os.path.join(data, "model.pt"),
                                   "--calib", os.path.join(data, "calib.pt"), "--size", str(size),
                                   "--act-bits", str(act), "--export-profile", profile,
                                   "--iters", str(args.iters), "--calib-samples",
                                   str(args.calib_samples), "--seed", "0",
                                   "--eval", os.path.join(data, "eval.pt"), "--frontier-evals",
                                   "0", "--out", out], capture_output=True, text=True)
                        if done.returncode != 0:
                            sys.exit(f"{model} {profile} a{act} failed:\n{done.stderr[-3000:]}")
                    with open(os.path.join(out, "report.json")) as f:
                        report = json.load(f)
                    check = subprocess.run(
                        ["/usr/bin/python3",
                         os.path.join(REPO, "tests", "engine", "check_quantized_model.py"), out,
                         os.path.join(data, "eval.pt")], capture_output=True, text=True, env=env)
                    acc = report["accuracy"]
                    lines = [l for l in check.stdout.splitlines() if l.startswith(("onnx", "FAIL"))]
                    print(f"{model} {profile:8s} a{act}: size {report['result']['size_bytes']} B, "
                          f"top-1 fp32 {acc['fp32']:.4f} nearest "
                          f"{acc['quantized_before_finetune']:.4f} ptq {acc['quantized']:.4f}; "
                          f"{'; '.join(lines)}", flush=True)
                    failed += check.returncode != 0
    finally:
        server.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
