#!/usr/bin/python3
"""The accuracy study (issue 4, item 7): OMPQ-mixed vs uniform vs random bit allocations.

Drives the real service as a user would: starts `ompq-server` on loopback with a private
data dir and runs `ompqctl quantize` for every point, reading each job's report.json.

For each model (trained by train_models.py) and activation bit-width, the weight budgets are
the model sizes of uniform B-bit weights (B in --bits), the first and last layers at
--pin-first-last bits for every method. At each budget:
  ompq     the engine's allocation under --size BUDGET with the paper's program
           (--objective orthogonality)
  uniform  every other layer pinned at B bits (one exact pin per layer)
  random   --random-seeds allocations drawn per layer from the candidate bit-widths, kept
           only if BUDGET*--random-min-fill <= size <= BUDGET, one exact pin per layer
all with the same finetuning (--finetune, --iters, --calib-samples) and evaluation.
With --finetune qat every run trains on the same --qat-train-samples labelled training images
(a seeded subset of the training split, written once to CACHE/<model>/train_<N>.pt) for
--epochs at --lr.
With --betas, OMPQ also runs at the --beta-bits budget (act bits 8) with each beta.
With --between-bits (e.g. 2.5 3.5), OMPQ also runs at the sizes of those average weight
bit-widths, where no uniform allocation exists: the points of its curve between the uniform
ones (phase 5).
The allocation objectives (phases 6-8), at every budget and activation width:
  dist-bB   --objective distortion --beta B for each B in --distortion-betas (phase 6; also
            at the --between-bits sizes)
  ompq-box  the paper's program in the public code's PTQ box, --weight-bits 2,3,4 (phase 7)
  sens      a peer-style sensitivity baseline: sensitivity.py measures each layer's output
            noise at each bit-width with only that layer quantized (one forward pass each),
            solve_allocation (the engine's exact solver) minimises the sum; exact pins (phase 8)

Every run's report.json stays in WORK/<model>/<run>/ and its figures go into --results;
re-running skips runs whose report already exists (resumable).
"""
import argparse
import concurrent.futures
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_CACHE = os.path.expanduser("~/.cache/ompq/accuracy")
# The paper's program, named: the service's default objective is the distortion one.
ORTHOGONALITY = ["--objective", "orthogonality"]


def size_bytes(layers, bits, other_bytes):
    """What the engine reports as result.size_bytes (bit_allocation.cc AllocationSizeBytes):
    ceil(sum(params * bits) / 8) + other_bytes."""
    weight_bits = sum(layer["params"] * b for layer, b in zip(layers, bits))
    return int(math.ceil(weight_bits / 8)) + other_bytes


def bops(layers, bits, act_bits):
    """bit_allocation.cc AllocationBops: sum(macs * act_bits * bits)."""
    return sum(layer["macs"] * act_bits * b for layer, b in zip(layers, bits))


def exported_top1(run_dir, eval_pt, device="cpu"):
    """Top-1 of RUN_DIR/model_quantized.pt on EVAL_PT ({"inputs", "labels"}) with this
    Python's PyTorch on `device`; None when the job exported no model."""
    import torch
    path = os.path.join(run_dir, "model_quantized.pt")
    if not os.path.exists(path):
        return None
    data = torch.load(eval_pt)
    net = torch.jit.load(path, map_location=device).eval()
    x, y = data["inputs"].to(device), data["labels"].to(device)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 500):
            correct += (net(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    return correct / len(y)


def exact_pins(layers, bits):
    """One --pin per layer; RE2 full-matches the pattern, re.escape guards the dots."""
    return [f"{re.escape(layer['name'])}={b}" for layer, b in zip(layers, bits)]


class Server:
    """ompq-server on 127.0.0.1:0 with a private data dir; stopped with SIGTERM."""

    def __init__(self, bin_dir, work, workers):
        self.dir = tempfile.mkdtemp(prefix="ompq-study-", dir=work)
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "ompq-server"), "--listen", "127.0.0.1:0", "--port-file",
             port_file, "--metrics-listen", "127.0.0.1:0",
             "--data-dir", os.path.join(self.dir, "data"), "--workers", str(workers)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                with open(port_file) as f:
                    self.address = "127.0.0.1:" + f.read().strip()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        sys.exit(f"ompq-server did not start; log in {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Study:
    def __init__(self, args, server):
        self.args = args
        self.server = server
        self.lock = threading.Lock()
        self.results = {"runs": {}}
        if os.path.exists(args.results):
            with open(args.results) as f:
                self.results = json.load(f)
        self.results["settings"] = {
            "finetune": args.finetune, "iters": args.iters, "calib_samples": args.calib_samples,
            "pin_first_last": args.pin_first_last, "bits": args.bits, "act_bits": args.act_bits,
            "random_seeds": args.random_seeds, "random_min_fill": args.random_min_fill,
            "betas": args.betas, "beta_bits": args.beta_bits, "eval": not args.no_eval}
        if args.finetune == "qat":
            self.results["settings"].update(epochs=args.epochs, lr=args.lr,
                                            qat_train_samples=args.qat_train_samples)

    def save(self):
        tmp = self.args.results + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=True)
        os.replace(tmp, self.args.results)

    def quantize(self, model, run_id, size, act_bits, finetune, extra):
        """Runs one job (or reuses its report) and returns the report."""
        out = (os.path.join(self.args.work, "probe", model) if run_id == "probe" else
               os.path.join(self.args.work, finetune, model, run_id))
        report_path = os.path.join(out, "report.json")
        if not os.path.exists(report_path):
            data = os.path.join(self.args.cache, model)
            cmd = [os.path.join(self.args.bin_dir, "ompqctl"), "--server", self.server.address,
                   "--output", "json", "quantize", os.path.join(data, "model.pt"),
                   "--calib", os.path.join(data, "calib.pt"), "--size", str(size),
                   "--act-bits", str(act_bits), "--pin-first-last", str(self.args.pin_first_last),
                   "--finetune", finetune, "--seed", "0",
                   "--calib-samples", str(self.args.calib_samples), "--out", out + ".partial"]
            if finetune == "ptq":
                cmd += ["--iters", str(self.args.iters)]
            if finetune == "qat":
                cmd += ["--train", self.qat_train_file(model), "--epochs", str(self.args.epochs),
                        "--lr", str(self.args.lr)]
            if not self.args.no_eval and finetune != "none":
                # The study measures top-1 itself; frontier evaluations would only cost time.
                cmd += ["--eval", os.path.join(data, "eval.pt"), "--frontier-evals", "0"]
            cmd += extra
            shutil.rmtree(out + ".partial", ignore_errors=True)
            start = time.time()
            os.makedirs(os.path.dirname(out), exist_ok=True)
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                sys.exit(f"{model}/{run_id} failed (exit {proc.returncode}):\n"
                         f"{' '.join(cmd)}\n{proc.stderr[-3000:]}")
            with open(os.path.join(out + ".partial", "ompqctl.json"), "w") as f:
                f.write(proc.stdout)
            os.replace(out + ".partial", out)
            print(f"  {model}/{run_id}: {time.time() - start:.0f} s", flush=True)
        with open(report_path) as f:
            report = json.load(f)
        report["_dir"] = out
        return report

    def qat_train_file(self, model):
        """--qat-train-samples labelled training images (seeded), the same for every run."""
        n = self.args.qat_train_samples
        path = os.path.join(self.args.cache, model, f"train_{n}.pt")
        with self.lock:
            if not os.path.exists(path):
                import torch
                sys.path.insert(0, os.path.join(REPO, "scripts"))
                from fashion_mnist import load_split
                images, labels = load_split("train")
                idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))[:n]
                torch.save({"inputs": images[idx].contiguous(), "labels": labels[idx].contiguous()},
                           path + ".tmp")
                os.replace(path + ".tmp", path)
        return path

    def torch_top1(self, model, out):
        """Top-1 of the exported model_quantized.pt on eval.pt, in Python (torch.jit.load):
        the number a user gets, and a check of the report's own figure."""
        return exported_top1(out, os.path.join(self.args.cache, model, "eval.pt"))

    def record(self, model, run_id, report, **fields):
        acc = report.get("accuracy") or {}
        top1_torch = self.torch_top1(model, report["_dir"])
        timings = report.get("timings_seconds", {})
        row = dict(fields, model=model, run=run_id,
                   size_bytes=report["result"]["size_bytes"], bops=report["result"]["bops"],
                   bits=[layer["bits"] for layer in report["layers"]],
                   top1=acc.get("quantized", top1_torch), top1_torch=top1_torch,
                   top1_source="report" if "quantized" in acc else "torch.jit.load",
                   finetune=self.args.finetune, top1_before_finetune=acc.get(
                       "quantized_before_finetune"), fp32=acc.get("fp32"),
                   search_seconds=sum(timings.get(k, 0.0)
                                      for k in ("analyze", "orthogonality", "solve")),
                   timings_seconds=timings)
        with self.lock:
            self.results["runs"][f"{model}/{run_id}"] = row
            self.save()
        top1 = "-" if row["top1"] is None else f"{100 * row['top1']:.2f}%"
        print(f"{model}/{run_id}: size {row['size_bytes']} B, top-1 {top1}", flush=True)
        return row

    def layers(self, model):
        """A first job (no finetuning) tells the layers, their params and other_bytes."""
        report = self.quantize(model, "probe", 1 << 40, 8, "none", [])
        return report["layers"], report["model"]["other_bytes"], report["search"]["weight_bits"]

    def run_model(self, model):
        a = self.args
        layers, other, candidates = self.layers(model)
        n = len(layers)
        pinned = [a.pin_first_last if i in (0, n - 1) else None for i in range(n)]
        budgets = {}
        for b in a.bits:
            budgets[b] = size_bytes(layers, [p or b for p in pinned], other)
        self.results.setdefault("models", {})[model] = {
            "layers": [{k: layer[k] for k in ("name", "kind", "params", "macs")}
                       for layer in layers],
            "other_bytes": other, "candidates": candidates, "budgets": budgets,
            "fp32_size_bytes": size_bytes(layers, [32] * n, other)}
        meta_path = os.path.join(a.cache, model, "meta.json")
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                self.results["models"][model]["meta"] = json.load(f)
        self.save()
        print(f"{model}: {n} layers, budgets {budgets}", flush=True)

        # The runs, each (phase, run id, size budget, act bits, extra flags, row fields).
        # Executed phase by phase over all models, so that an interrupted study still has
        # the most telling comparisons: OMPQ vs uniform, then beta, then random.
        runs = []
        for act in a.act_bits:
            for b in a.bits:
                budget = budgets[b]
                common = dict(act_bits=act, weight_bits=b, budget_bytes=budget)
                uniform = [p or b for p in pinned]
                assert size_bytes(layers, uniform, other) == budget
                phase = 0 if act == 8 else 1
                runs.append((phase, f"ompq-w{b}-a{act}", budget, act, ORTHOGONALITY,
                             dict(method="ompq", beta=None, **common)))
                runs.append((phase, f"uniform-w{b}-a{act}", budget, act,
                             self.pin_args(layers, uniform), dict(method="uniform", **common)))
                for seed in range(a.random_seeds):
                    bits = self.random_bits(layers, pinned, other, candidates, budget, b, seed)
                    rid = f"random{seed}-w{b}-a{act}"
                    if bits is None:
                        print(f"{model}/{rid}: no random allocation fills "
                              f"{a.random_min_fill:.0%} of the budget", flush=True)
                        continue
                    fields = dict(method="random", seed=seed, **common)
                    if bits == uniform:
                        # At the smallest candidate's size nothing else fits: the run would
                        # repeat the uniform one (PTQ is deterministic for a fixed seed).
                        rid, fields["same_as"] = f"uniform-w{b}-a{act}", "uniform"
                    fields["row"] = f"random{seed}-w{b}-a{act}"
                    runs.append((3 if act == 8 else 4, rid, budget, act,
                                 self.pin_args(layers, bits), fields))
        for b in a.between_bits:
            budget = size_bytes(layers, [p or b for p in pinned], other)
            budgets[b] = budget
            for act in a.act_bits:
                runs.append((5, f"ompq-w{b:g}-a{act}", budget, act, ORTHOGONALITY,
                             dict(method="ompq", beta=None, act_bits=act, weight_bits=b,
                                  budget_bytes=budget)))
        sizes = dict(budgets)
        for b in a.between_bits:
            sizes[b] = size_bytes(layers, [p or b for p in pinned], other)
        sensitivity = self.sensitivity(model) if not a.phases or 8 in a.phases else None
        for act in a.act_bits:
            for b, budget in sizes.items():
                common = dict(act_bits=act, weight_bits=b, budget_bytes=budget)
                for beta in a.distortion_betas:
                    runs.append((6, f"dist-b{beta:g}-w{b:g}-a{act}", budget, act,
                                 ["--objective", "distortion", "--beta", f"{beta:g}"],
                                 dict(method=f"distortion-beta{beta:g}", beta=beta, **common)))
                if b not in budgets:
                    continue
                runs.append((7, f"ompq-box-w{b:g}-a{act}", budget, act,
                             ORTHOGONALITY + ["--weight-bits", "2,3,4"],
                             dict(method="ompq-box", **common)))
                if sensitivity is not None:
                    bits = self.sensitivity_bits(model, sensitivity, layers, pinned, other,
                                                 candidates, budget)
                    runs.append((8, f"sens-w{b:g}-a{act}", budget, act,
                                 self.pin_args(layers, bits),
                                 dict(method="sensitivity",
                                      search_multiple=sensitivity["forward_multiple"],
                                      **common)))
        for beta in a.betas:
            budget = budgets[a.beta_bits]
            runs.append((2, f"ompq-beta{beta:g}-w{a.beta_bits}-a8", budget, 8,
                         ORTHOGONALITY + ["--beta", f"{beta:g}"],
                         dict(method="ompq-beta", beta=beta, act_bits=8,
                              weight_bits=a.beta_bits, budget_bytes=budget)))
        return [(phase, model, *rest) for phase, *rest in runs]

    def execute(self, planned):
        """Phase by phase (a later phase may reuse an earlier run), --jobs runs at a time."""
        def one(index, model, rid, budget, act, extra, fields):
            print(f"[{index + 1}/{len(planned)}] {model}/{fields.get('row', rid)}", flush=True)
            fields = dict(fields)
            row = fields.pop("row", rid)
            self.record(model, row, self.quantize(model, rid, budget, act, self.args.finetune,
                                                  extra), **fields)

        ordered = sorted((r for r in planned if not self.args.phases or r[0] in self.args.phases),
                         key=lambda r: (r[0], r[-1].get("seed", 0)))
        with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as pool:
            for phase in sorted({r[0] for r in ordered}):
                futures = [pool.submit(one, i, *r[1:]) for i, r in enumerate(ordered)
                           if r[0] == phase]
                for future in futures:
                    future.result()

    def sensitivity(self, model):
        """sensitivity.py's per-layer noise tables, measured once per model."""
        path = os.path.join(self.args.work, "sensitivity", model + ".json")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = os.path.join(self.args.cache, model)
            probe = os.path.join(self.args.work, "probe", model, "report.json")
            subprocess.run([sys.executable, os.path.join(REPO, "bench", "accuracy",
                                                         "sensitivity.py"),
                            os.path.join(data, "model.pt"), os.path.join(data, "calib.pt"),
                            probe, path + ".tmp"], check=True)
            os.replace(path + ".tmp", path)
        with open(path) as f:
            return json.load(f)

    def sensitivity_bits(self, model, sensitivity, layers, pinned, other, candidates, budget):
        """The engine's exact solver on the measured noise (minimised: values = -noise)."""
        problem = {"layers": [], "other_bytes": other, "size_budget_bytes": budget}
        for layer, pin in zip(layers, pinned):
            cands = [pin] if pin else candidates
            noise = sensitivity["noise"][layer["name"]]
            problem["layers"].append({
                "params": layer["params"], "macs": layer["macs"], "candidates": cands,
                "values": [-noise[str(c)] if str(c) in noise else 0.0 for c in cands]})
        proc = subprocess.run([os.path.join(self.args.bin_dir, "solve_allocation")],
                              input=json.dumps(problem), capture_output=True, text=True,
                              check=True)
        return json.loads(proc.stdout)["bits"]

    @staticmethod
    def pin_args(layers, bits):
        args = []
        for pin in exact_pins(layers, bits):
            args += ["--pin", pin]
        return args

    def random_bits(self, layers, pinned, other, candidates, budget, b, seed):
        """Rejection sampling of per-layer bits, reproducible per (budget, seed). At the
        smallest candidate's size only the uniform allocation fits: it is returned as is."""
        rng = random.Random(f"{b}-{seed}")
        free = [i for i, p in enumerate(pinned) if p is None]
        low = min(size_bytes(layers, [p or min(candidates) for p in pinned], other), budget)
        floor = max(low, int(self.args.random_min_fill * budget))
        for _ in range(200000):
            bits = [p or rng.choice(candidates) for p in pinned]
            s = size_bytes(layers, bits, other)
            if floor <= s <= budget:
                return bits
        # Plain rejection is hopeless when few draws fit; fall back to drawing each layer
        # from the candidates near B and repairing down to the budget.
        for _ in range(20000):
            bits = [p or rng.choice([c for c in candidates if abs(c - b) <= 2]) for p in pinned]
            while size_bytes(layers, bits, other) > budget:
                i = rng.choice([j for j in free if bits[j] > min(candidates)])
                bits[i] = max(c for c in candidates if c < bits[i])
            if size_bytes(layers, bits, other) >= floor:
                return bits
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin-dir", default=os.path.join(REPO, "build", "bin"),
                   help="folder with ompq-server and ompqctl")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="train_models.py's cache")
    p.add_argument("--work", default=os.path.join(DEFAULT_CACHE, "runs"),
                   help="each run's artifacts (the resume state)")
    p.add_argument("--results", help="default bench/accuracy/results_<finetune>.json")
    p.add_argument("--models", nargs="+", default=["resnet", "mobilenet"])
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--act-bits", type=int, nargs="+", default=[8, 4])
    p.add_argument("--pin-first-last", type=int, default=8)
    p.add_argument("--finetune", default="ptq", choices=["ptq", "qat", "none"])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--calib-samples", type=int, default=512)
    p.add_argument("--qat-train-samples", type=int, default=10000,
                   help="QAT: labelled training images per run")
    p.add_argument("--epochs", type=int, default=1, help="QAT epochs")
    p.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate")
    p.add_argument("--random-seeds", type=int, default=5)
    p.add_argument("--random-min-fill", type=float, default=0.97)
    p.add_argument("--betas", type=float, nargs="*", default=[0.5, 2, 5],
                   help="extra OMPQ runs at --beta-bits (act 8); beta 1 is the default run")
    p.add_argument("--beta-bits", type=int, default=3)
    p.add_argument("--distortion-betas", type=float, nargs="*", default=[0, 1],
                   help="--objective distortion runs at each of these betas (phase 6)")
    p.add_argument("--between-bits", type=float, nargs="*", default=[],
                   help="OMPQ-only runs at these average weight bit-widths' sizes (phase 5)")
    p.add_argument("--no-eval", action="store_true", help="no --eval (service without it)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time (the server gets as many local workers)")
    p.add_argument("--phases", type=int, nargs="*",
                   help="only these phases: 0 OMPQ+uniform act 8, 1 the same at act 4, "
                        "2 beta, 3 random act 8, 4 random act 4, 5 --between-bits, "
                        "6 distortion objective, 7 OMPQ in the 2..4 box, 8 sensitivity")
    p.add_argument("--dry-run", action="store_true",
                   help="run only the probe jobs and print the planned runs")
    args = p.parse_args()
    if not args.results:
        args.results = os.path.join(REPO, "bench", "accuracy", f"results_{args.finetune}.json")
    os.makedirs(args.work, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so that the server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    server = Server(args.bin_dir, args.work, args.jobs)
    try:
        study = Study(args, server)
        start = time.time()
        planned = []
        for model in args.models:
            planned += study.run_model(model)
        if args.dry_run:
            for phase, model, rid, budget, act, extra, fields in planned:
                print(phase, model, fields.get("row", rid), budget, act, " ".join(extra))
        else:
            study.execute(planned)
        print(f"study done in {time.time() - start:.0f} s; results in {args.results}")
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
