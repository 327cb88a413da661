#!/usr/bin/env python3
"""Cross-checks the multiple-choice bit allocation against an independent MILP solver.

Runs allocation_milp_export, which writes random problems (8 to 40 layers, or MobileNetV2's
53: beyond exhaustive search) and the optimum found by the C++ solver to a JSON file, then
re-solves each with scipy.optimize.milp (HiGHS) over binary x_ij (sum_j x_ij = 1 per layer,
the size row in bits, the BOPs row) and compares.

Feasibility is checked exactly in integers on both answers. HiGHS works with floating
tolerances, so its answer is trusted only where it is exactly feasible; the C++ answer must
then be at least as good, and (HiGHS's optimum being proven up to its gap) no worse.

Usage: allocation_milp_check.py PATH/TO/allocation_milp_export
Needs Debian's python3-scipy (scripts/test.sh installs it); fails without it.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

ABS_TOL = 1e-6  # HiGHS's default absolute MIP gap; values are of order 1.


def value(layer, bits):
    return layer["values"][layer["candidates"].index(bits)]


def feasible(problem, bits):
    size = sum(l["params"] * b for l, b in zip(problem["layers"], bits))
    bops = sum(l["macs"] * l["act_bits"] * b for l, b in zip(problem["layers"], bits))
    if problem["size_budget"] is not None:
        if size > 8 * (problem["size_budget"] - problem["other_bytes"]):
            return False
    return problem["bops_budget"] is None or bops <= problem["bops_budget"]


def solve_milp(problem):
    layers = problem["layers"]
    columns = [(i, b) for i, l in enumerate(layers) for b in l["candidates"]]
    objective = np.array([-value(layers[i], b) for i, b in columns])  # milp minimises.
    rows, lower, upper = [], [], []
    for i in range(len(layers)):
        rows.append([1.0 if c[0] == i else 0.0 for c in columns])
        lower.append(1)
        upper.append(1)
    if problem["size_budget"] is not None:
        rows.append([layers[i]["params"] * b for i, b in columns])
        lower.append(-np.inf)
        upper.append(8 * (problem["size_budget"] - problem["other_bytes"]))
    if problem["bops_budget"] is not None:
        rows.append([layers[i]["macs"] * layers[i]["act_bits"] * b for i, b in columns])
        lower.append(-np.inf)
        upper.append(problem["bops_budget"])
    result = milp(objective, integrality=np.ones(len(columns)), bounds=Bounds(0, 1),
                  constraints=LinearConstraint(np.array(rows, dtype=float), lower, upper),
                  options={"mip_rel_gap": 1e-9, "time_limit": 120})
    if result.status != 0:
        return None
    bits = [0] * len(layers)
    for (i, b), x in zip(columns, result.x):
        if x > 0.5:
            bits[i] = b
    return bits


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problems.json")
        subprocess.run([sys.argv[1], path], check=True)
        with open(path) as f:
            problems = json.load(f)
    failures, trusted = 0, 0
    for n, p in enumerate(problems):
        ours = [l["bits"] for l in p["layers"]]
        our_value = sum(value(l, b) for l, b in zip(p["layers"], ours))
        errors = []
        if not feasible(p, ours):
            errors.append("the C++ allocation is over a budget")
        if abs(our_value - p["objective"]) > 1e-9 * max(1.0, abs(our_value)):
            errors.append(f"objective {p['objective']} but the bits give {our_value}")
        if p["lp_bound"] < our_value - 1e-9 * max(1.0, abs(our_value)):
            errors.append(f"lp_bound {p['lp_bound']} below the objective {our_value}")
        theirs = solve_milp(p)
        if theirs is not None and feasible(p, theirs):
            trusted += 1
            their_value = sum(value(l, b) for l, b in zip(p["layers"], theirs))
            tol = ABS_TOL + 1e-9 * abs(our_value)
            if their_value > our_value + 1e-9 * max(1.0, abs(our_value)):
                errors.append(f"MILP found {their_value} > C++ {our_value}")
            elif their_value < our_value - tol:
                errors.append(f"MILP optimum {their_value} below C++ {our_value}")
        for e in errors:
            print(f"problem {n} ({len(p['layers'])} layers): {e}")
        failures += bool(errors)
    print(f"{len(problems)} problems, {trusted} with an exactly feasible MILP answer, "
          f"{failures} failed")
    if trusted < len(problems) // 2:
        print("too few MILP answers were exactly feasible to compare")
        failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
