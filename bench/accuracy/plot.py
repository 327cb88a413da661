#!/usr/bin/python3
"""Plots and tabulates the accuracy study (run_study.py's results JSON).

  plot.py [--results bench/accuracy/results.json] [--out docs/results_accuracy.png] [--table]

The figure follows the OMPQ paper's: top-1 against model size, one panel per model and
activation bit-width; OMPQ-mixed and uniform as lines, random allocations as their mean with
a min-max band, FP32 dashed. --table prints the Markdown table of docs/results.md.
Needs Debian's python3-matplotlib (apt-get install python3-matplotlib) for the figure only.
"""
import argparse
import json
import os
import statistics
from collections import defaultdict

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def load(path):
    with open(path) as f:
        return json.load(f)


def fp32_top1(results, model):
    """The FP32 top-1 the service measured on eval.pt (same for every run of a model);
    the training-time figure when no run has it."""
    for row in results["runs"].values():
        if row["model"] == model and row.get("fp32") is not None:
            return row["fp32"]
    meta = results.get("models", {}).get(model, {}).get("meta", {})
    return meta.get("fp32_top1_eval_subset")


def grouped(results):
    """{(model, act_bits): {weight_bits: {method: [rows]}}} for the main grid."""
    groups = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in results["runs"].values():
        if row.get("method") in ("ompq", "uniform", "random"):
            groups[(row["model"], row["act_bits"])][row["weight_bits"]][row["method"]].append(row)
    return groups


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def table(results):
    lines = ["| model | act | budget (uniform W-bit size) | FP32 | OMPQ | uniform | "
             "random mean ± std (min-max, n) | OMPQ before PTQ | uniform before PTQ | "
             "search s: OMPQ / uniform / random |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, act), by_bits in sorted(grouped(results).items(), key=lambda kv: (
            kv[0][0], -kv[0][1])):
        fp32 = fp32_top1(results, model)
        for b in sorted(by_bits):
            m = by_bits[b]
            ompq = m["ompq"][0] if m["ompq"] else {}
            uni = m["uniform"][0] if m["uniform"] else {}
            rnd = [r["top1"] for r in m["random"] if r.get("top1") is not None]
            if rnd:
                std = statistics.stdev(rnd) if len(rnd) > 1 else 0.0
                rnd_text = (f"{100 * statistics.mean(rnd):.2f} ± {100 * std:.2f} "
                            f"({100 * min(rnd):.2f}-{100 * max(rnd):.2f}, {len(rnd)})")
            else:
                rnd_text = "-"
            budget = (ompq or uni).get("budget_bytes")
            search = " / ".join(
                "-" if not rows else f"{statistics.mean(r['search_seconds'] for r in rows):.1f}"
                for rows in (m["ompq"], m["uniform"], m["random"]))
            lines.append(
                f"| {model} | {act} | W{b}: {budget / 1024:.1f} KiB | {pct(fp32)} | "
                f"{pct(ompq.get('top1'))} | {pct(uni.get('top1'))} | {rnd_text} | "
                f"{pct(ompq.get('top1_before_finetune'))} | "
                f"{pct(uni.get('top1_before_finetune'))} | {search} |")
    beta_rows = sorted((r for r in results["runs"].values() if r.get("method") in (
        "ompq", "ompq-beta") and r.get("act_bits") == 8 and r.get("weight_bits") == results.get(
        "settings", {}).get("beta_bits")), key=lambda r: (r["model"], r.get("beta") or 1.0))
    if beta_rows:
        lines += ["", "| model | beta | size (KiB) | OMPQ top-1 | before PTQ | bits |",
                  "|---|---|---|---|---|---|"]
        for r in beta_rows:
            lines.append(f"| {r['model']} | {r.get('beta') or 1.0:g} | "
                         f"{r['size_bytes'] / 1024:.1f} | {pct(r.get('top1'))} | "
                         f"{pct(r.get('top1_before_finetune'))} | "
                         f"{','.join(str(b) for b in r['bits'])} |")
    return "\n".join(lines)


def plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(results)
    models = sorted({m for m, _ in groups})
    acts = sorted({a for _, a in groups}, reverse=True)
    fig, axes = plt.subplots(len(models), len(acts), figsize=(5.5 * len(acts), 4 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        fp32 = fp32_top1(results, model)
        for j, act in enumerate(acts):
            ax = axes[i][j]
            by_bits = groups.get((model, act), {})
            for method, style in (("ompq", "o-"), ("uniform", "s-")):
                pts = sorted((r["size_bytes"] / 1024, 100 * r["top1"])
                             for b in by_bits for r in by_bits[b][method]
                             if r.get("top1") is not None)
                if pts:
                    ax.plot(*zip(*pts), style, label="OMPQ-mixed" if method == "ompq"
                            else "uniform")
            rnd = []
            for b in sorted(by_bits):
                tops = [100 * r["top1"] for r in by_bits[b]["random"] if r.get("top1") is not None]
                if tops:
                    size = statistics.mean(r["size_bytes"] for r in by_bits[b]["random"]) / 1024
                    rnd.append((size, statistics.mean(tops), min(tops), max(tops)))
            if rnd:
                x, mean, lo, hi = zip(*rnd)
                ax.plot(x, mean, "^--", color="tab:gray", label="random (mean)")
                ax.fill_between(x, lo, hi, color="tab:gray", alpha=0.2, label="random (min-max)")
            if fp32 is not None:
                ax.axhline(100 * fp32, color="black", linestyle="--", linewidth=1,
                           label=f"FP32 ({100 * fp32:.2f})")
            for b in sorted(by_bits):
                rows = by_bits[b]["uniform"] or by_bits[b]["ompq"]
                if rows:
                    ax.axvline(rows[0]["budget_bytes"] / 1024, color="tab:blue", alpha=0.15)
            finetune = results.get("settings", {}).get("finetune", "?")
            ax.set_title(f"{model}, activations {act}-bit, --finetune {finetune}")
            ax.set_xlabel("model size (KiB; first/last layer 8-bit)")
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=os.path.join(REPO, "bench", "accuracy", "results.json"))
    p.add_argument("--out", default=os.path.join(REPO, "docs", "results_accuracy.png"))
    p.add_argument("--table", action="store_true", help="print the Markdown table")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    results = load(args.results)
    if args.table:
        print(table(results))
    if not args.no_plot:
        plot(results, args.out)


if __name__ == "__main__":
    main()
