#!/usr/bin/python3
"""bench_job: a whole job through the real service, as a user runs it, against one warm
forward pass of the same batch.

For each model: `ompqctl quantize MODEL --calib calib_224.pt --size 1GiB --finetune none`
against an ompq-server with one local worker (warmed by a first small job), timed from
the upload to the artifacts downloaded; report.json's stage timings; and a warm forward
pass of the same 32 images through the same TorchScript model in Python (median of 5,
after 2 unmeasured runs, all cores; in a child process, after the job). Every figure is
printed as a multiple of that forward pass, measured in the same run. Not a test: it
asserts nothing.

Usage: bench_job.py BIN_DIR [--models resnet18,mobilenet_v2,densenet121,efficientnet_b0]
                    [--work DIR] [--repeats 1]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"search": 1.5, "job": 4.0}  # Issue targets, as multiples of one forward pass.


def warm_forward_seconds(model_path, calib_path):
    out = subprocess.run([sys.executable, __file__, "--forward", model_path, calib_path],
                         check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def forward_child(model_path, calib_path):
    torch.set_num_threads(os.cpu_count() or 1)
    model = torch.jit.load(model_path).eval()
    batch = torch.load(calib_path)
    times = []
    with torch.inference_mode():
        for i in range(7):
            start = time.perf_counter()
            model(batch)
            if i >= 2:
                times.append(time.perf_counter() - start)
    print(statistics.median(times))


def start_server(bin_dir, work):
    port_file = os.path.join(work, "server.port")
    if os.path.exists(port_file):
        os.remove(port_file)  # A previous run's.
    log = open(os.path.join(work, "server.log"), "ab")
    server = subprocess.Popen(
        [os.path.join(bin_dir, "ompq-server"), "--listen", "127.0.0.1:0", "--port-file",
         port_file, "--data-dir", os.path.join(work, "data"), "--metrics-listen",
         "127.0.0.1:0", "--workers", "1"], stdout=log, stderr=log)
    for _ in range(300):
        if os.path.exists(port_file) and open(port_file).read().strip():
            return server, "127.0.0.1:" + open(port_file).read().strip()
        if server.poll() is not None:
            sys.exit("ompq-server exited at start; see " + log.name)
        time.sleep(0.1)
    server.kill()
    sys.exit("ompq-server wrote no port file within 30 s")


def quantize(bin_dir, server, model, calib, out):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run(
        [os.path.join(bin_dir, "ompqctl"), "--server", server, "quantize", model, "--calib",
         calib, "--size", "1GiB", "--finetune", "none", "--out", out, "--output", "json"],
        capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"ompqctl quantize {model} exited {run.returncode}:\n{run.stderr}")
    with open(os.path.join(out, "report.json")) as f:
        return wall, json.load(f)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--forward":
        forward_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--models", default="resnet18,mobilenet_v2,densenet121,efficientnet_b0")
    parser.add_argument("--work", default="")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    models = args.models.split(",")
    work = args.work or tempfile.mkdtemp(prefix="ompq-bench-job.")
    inputs = os.path.join(work, "inputs")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "search", "make_inputs.py"),
                    inputs, *models], check=True)
    calib = os.path.join(inputs, "calib_224.pt")
    server, address = start_server(os.path.abspath(args.bin_dir), work)
    try:
        # The first job starts the worker's LibTorch; it is not measured.
        quantize(args.bin_dir, address, os.path.join(inputs, models[0] + ".pt"), calib,
                 os.path.join(work, "warm-up"))
        print(f"{'model':16} {'fwd s':>6} {'job s':>6} {'job/fwd':>7} {'search/fwd':>10}"
              f"  stages as multiples of one forward pass")
        for name in models:
            model = os.path.join(inputs, name + ".pt")
            for _ in range(args.repeats):
                wall, report = quantize(args.bin_dir, address, model, calib,
                                        os.path.join(work, "out-" + name))
                fwd = warm_forward_seconds(model, calib)
                t = report["timings_seconds"]
                search = t["analyze"] + t["orthogonality"] + t["solve"]
                stages = " ".join(f"{k}={t[k] / fwd:.2f}" for k in
                                  ("analyze", "orthogonality", "solve", "calibrate", "export"))
                print(f"{name:16} {fwd:6.3f} {wall:6.2f} {wall / fwd:7.2f} {search / fwd:10.2f}  "
                      f"{stages}", flush=True)
        print(f"targets: search stages <= {TARGETS['search']}x and the whole job <= "
              f"{TARGETS['job']}x one forward pass (ResNet-18, MobileNetV2)")
    finally:
        server.terminate()
        server.wait(timeout=60)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
