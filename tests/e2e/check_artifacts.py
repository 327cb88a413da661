#!/usr/bin/python3
"""Checks the artifacts `ompqctl quantize` downloaded for the e2e model (make_model.py).

Usage: check_artifacts.py OUT_DIR SIZE_BUDGET [JOB_NAME]

Exits non-zero with one line per problem. The checks are the PRODUCT.md report.json
contract plus facts that follow from the model: its five layers in execution order,
first and last pinned at 8 bits, and a size that matches the chosen bits.
"""
import json
import math
import os
import sys

EXPECTED_LAYERS = ["conv1", "conv2", "conv3", "fc1", "fc2"]
KINDS = {"conv1d", "conv2d", "conv3d", "linear"}
LAYER_FIELDS = {"name": str, "kind": str, "weight_shape": list, "params": int, "macs": int,
                "bits": int, "act_bits": int, "pinned": bool, "gamma": (int, float),
                "importance": (int, float)}
TIMINGS = ["analyze", "orthogonality", "solve", "finetune", "evaluate", "export", "total"]

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def main():
    out_dir, budget = sys.argv[1], int(sys.argv[2])
    job = sys.argv[3] if len(sys.argv) > 3 else None
    for name in ["report.json", "bit_config.json", "report.html", "model_quantized.pt",
                 "model_quantized.onnx", "encodings.json"]:
        if not check(os.path.isfile(os.path.join(out_dir, name)), f"{name} missing"):
            return
    with open(os.path.join(out_dir, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out_dir, "bit_config.json")) as f:
        bit_config = json.load(f)
    with open(os.path.join(out_dir, "report.html"), encoding="utf-8") as f:
        html = f.read()

    check(str(report.get("job", "")).startswith("jobs/"), f"job: {report.get('job')!r}")
    if job:
        check(report.get("job") == job, f"job {report.get('job')!r} != {job!r}")

    model = report.get("model", {})
    check(str(model.get("digest", "")).startswith("sha256:"), f"model.digest: {model}")
    check(is_int(model.get("parameters")) and model["parameters"] > 0, "model.parameters")
    check(is_int(model.get("fp32_size_bytes")) and model["fp32_size_bytes"] > 0,
          "model.fp32_size_bytes")

    search = report.get("search", {})
    check(isinstance(search.get("beta"), (int, float)), f"search.beta: {search}")
    check(search.get("samples") == 32, f"search.samples: {search.get('samples')}")
    check(search.get("weight_bits") == [2, 3, 4, 5, 6, 7, 8], "search.weight_bits")
    check(search.get("act_bits") == 8, "search.act_bits")
    check(is_int(search.get("seed")), "search.seed")

    layers = report.get("layers", [])
    names = [layer.get("name") for layer in layers]
    check(names == EXPECTED_LAYERS, f"layers {names} != {EXPECTED_LAYERS}")
    for layer in layers:
        for field, kind in LAYER_FIELDS.items():
            check(isinstance(layer.get(field), kind) and not (kind is int and
                                                              isinstance(layer.get(field), bool)),
                  f"layer {layer.get('name')}: {field}={layer.get(field)!r}")
        check(layer.get("kind") in KINDS, f"layer {layer.get('name')}: kind {layer.get('kind')}")
        check(layer.get("params") == math.prod(layer.get("weight_shape", [0])),
              f"layer {layer.get('name')}: params != prod(weight_shape)")
        check(layer.get("bits") in range(2, 9), f"layer {layer.get('name')}: bits")
        check(0 < layer.get("importance", 0) <= 1.0 + 1e-9, f"{layer.get('name')}: importance")
    if layers:
        check(layers[0]["pinned"] and layers[0]["bits"] == 8, "first layer not pinned at 8")
        check(layers[-1]["pinned"] and layers[-1]["bits"] == 8, "last layer not pinned at 8")
        check(abs(max(l["importance"] for l in layers) - 1) < 1e-9, "importance max != 1")

    orm = report.get("orm", [])
    size = len(layers)
    check(len(orm) == size and all(len(row) == size for row in orm), "orm is not L x L")
    if check(len(orm) == size and all(len(row) == size for row in orm), "orm shape"):
        for i in range(size):
            check(abs(orm[i][i] - 1) < 1e-6, f"orm[{i}][{i}] = {orm[i][i]}")
            for j in range(size):
                check(abs(orm[i][j] - orm[j][i]) < 1e-9, f"orm not symmetric at {i},{j}")
                check(-1e-9 <= orm[i][j] <= 1 + 1e-9, f"orm[{i}][{j}] = {orm[i][j]}")

    check(report.get("budget") == {"size_bytes": budget, "bops": None},
          f"budget: {report.get('budget')}")
    result = report.get("result", {})
    check(is_int(result.get("size_bytes")) and 0 < result["size_bytes"] <= budget,
          f"result.size_bytes {result.get('size_bytes')} not within budget {budget}")
    check(is_int(result.get("bops")) and result["bops"] > 0, "result.bops")
    objective, lp_bound = result.get("objective"), result.get("lp_bound")
    kind = report.get("search", {}).get("objective")
    check(kind in ("orthogonality", "distortion"), f"search.objective {kind!r}")
    numbers = isinstance(objective, (int, float)) and isinstance(lp_bound, (int, float))
    if kind == "distortion":
        # Minimised: the relaxation bounds it from below, and it is the sum of the layers'
        # weighted distortions at their bits.
        check(numbers and lp_bound <= objective * (1 + 1e-9) + 1e-12,
              f"objective {objective} < LP {lp_bound}")
        try:
            total = sum(l["importance"] * l["distortion"][str(l["bits"])] for l in layers)
            check(abs(total - objective) <= 1e-9 * (1 + abs(total)),
                  f"objective {objective} != sum theta D(bits) {total}")
        except (KeyError, TypeError) as e:
            check(False, f"layers lack their distortion tables: {e}")
    else:
        check(numbers and objective <= lp_bound * (1 + 1e-9) + 1e-12,
              f"objective {objective} > LP {lp_bound}")
    frontier = report.get("frontier")
    check(isinstance(frontier, list) and len(frontier) >= 20, "frontier: fewer than 20 points")
    for point in frontier or []:
        check(point["size_bytes"] <= point["size_budget_bytes"] and
              len(point["bits"]) == len(layers), f"frontier point {point}")
    if layers and is_int(model.get("fp32_size_bytes")):
        weight_params = sum(l["params"] for l in layers)
        other_bytes = model["fp32_size_bytes"] - 4 * weight_params
        expected = math.ceil(sum(l["params"] * l["bits"] for l in layers) / 8) + other_bytes
        check(result.get("size_bytes") == expected,
              f"result.size_bytes {result.get('size_bytes')} != {expected} from the bits")
        expected_bops = sum(l["macs"] * l["bits"] * l["act_bits"] for l in layers)
        check(result.get("bops") == expected_bops,
              f"result.bops {result.get('bops')} != {expected_bops} from the bits")
    # accuracy only with --eval (PRODUCT.md); when present, three fractions in [0, 1].
    if "accuracy" in report:
        for key in ["fp32", "quantized_before_finetune", "quantized"]:
            value = report["accuracy"].get(key)
            check(isinstance(value, (int, float)) and 0 <= value <= 1,
                  f"accuracy.{key}: {value!r}")
    quantization = report.get("quantization", {})
    check(len(quantization.get("layers", [])) == len(layers),
          "report.quantization.layers does not cover every layer")
    timings = report.get("timings_seconds", {})
    for key in TIMINGS:
        check(isinstance(timings.get(key), (int, float)) and timings[key] >= 0,
              f"timings_seconds.{key}: {timings.get(key)!r}")

    check(bit_config == {l["name"]: l["bits"] for l in layers},
          f"bit_config.json {bit_config} does not match the report's layers")
    onnx = report.get("export", {}).get("onnx", {})
    check(onnx.get("status") == "exported" and is_int(onnx.get("size_bytes")) and
          onnx.get("opset") == 13, f"export.onnx: {onnx}")
    with open(os.path.join(out_dir, "model_quantized.onnx"), "rb") as f:
        check(len(f.read()) == onnx.get("size_bytes"), "model_quantized.onnx size")
    check("<html" in html.lower() and len(html) > 500, "report.html is not an HTML page")
    check('src="http' not in html and "src='http" not in html,
          "report.html loads remote resources (must be self-contained)")


if __name__ == "__main__":
    main()
    for problem in problems:
        print("check_artifacts:", problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
