#!/usr/bin/python3
"""Tables and the figure of the allocation-objective study (docs/results.md, "Allocation
objectives"): run_study.py's results before PTQ (--finetune none) and after it (ptq).

  plot_objectives.py NONE.json PTQ.json [--out docs/results_objectives.png] [--table]

One panel per activation width: top-1 against model size for each method, before PTQ
dotted, after PTQ solid; random allocations as their mean. --table prints the Markdown
tables. The figure needs Debian's python3-matplotlib.
"""
import argparse
import json
import statistics
from collections import defaultdict

METHODS = [  # (method key in the results, label)
    ("distortion-beta0", "distortion, beta 0 (default)"),
    ("distortion-beta1", "distortion, beta 1"),
    ("sensitivity", "peer-style sensitivity"),
    ("ompq-box", "orthogonality, box 2..4"),
    ("ompq", "orthogonality, 2..8"),
    ("uniform", "uniform"),
    ("random", "random (mean of 5)"),
]


def rows_by(results):
    """{(method, act, weight_bits): [rows]} (weight_bits as float)."""
    out = defaultdict(list)
    for row in results["runs"].values():
        out[(row["method"], row["act_bits"], float(row["weight_bits"]))].append(row)
    return out


def cell(rows):
    if not rows:
        return None
    values = [100 * r["top1"] for r in rows if r.get("top1") is not None]
    if not values:
        return None
    mean = statistics.mean(values)
    if len(values) > 1:
        return f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})", mean
    return f"{mean:.2f}", mean


def table(results, title):
    by = rows_by(results)
    acts = sorted({k[1] for k in by}, reverse=True)
    sizes = sorted({k[2] for k in by})
    lines = [f"**{title}** (top-1 %, 5,000 eval images; one image is 0.02 pt)", ""]
    header = "| method | " + " | ".join(f"{b:g}-bit a{a}" for a in acts for b in sizes) + " |"
    lines += [header, "|---" * (1 + len(acts) * len(sizes)) + "|"]
    for key, label in METHODS:
        cells = []
        for a in acts:
            for b in sizes:
                c = cell(by.get((key, a, b), []))
                cells.append(c[0] if c else "")
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("none")
    p.add_argument("ptq")
    p.add_argument("--out", default="docs/results_objectives.png")
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    none, ptq = json.load(open(args.none)), json.load(open(args.ptq))
    if args.table:
        print(table(none, "Before PTQ (nearest rounding, activations calibrated)"))
        print()
        print(table(ptq, "After PTQ (200 AdaRound/BRECQ steps per unit, 256 samples)"))
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    acts = sorted({r["act_bits"] for r in none["runs"].values()}, reverse=True)
    fig, axes = plt.subplots(1, len(acts), figsize=(6.5 * len(acts), 4.6), squeeze=False)
    colors = dict(zip([m for m, _ in METHODS], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, act in zip(axes[0], acts):
        labelled = set()
        for results, style in ((none, ":"), (ptq, "-")):
            by = rows_by(results)
            for key, label in METHODS:
                points = []
                for (m, a, b), rows in sorted(by.items(), key=lambda kv: kv[0][2]):
                    if m == key and a == act:
                        c = cell(rows)
                        if c:
                            size = statistics.mean(r["size_bytes"] for r in rows) / 1024
                            points.append((size, c[1]))
                if points:
                    xs, ys = zip(*sorted(points))
                    # One legend entry per method; the line style tells before from after.
                    first = key not in labelled
                    labelled.add(key)
                    ax.plot(xs, ys, style, marker="o", color=colors[key],
                            label=label if first else None)
        ax.set_title(f"MobileNet-style, activations {act} bits")
        ax.set_xlabel("model size (KiB)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Allocation objectives at equal size: dotted before PTQ, solid after")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
