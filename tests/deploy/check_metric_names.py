#!/usr/bin/python3
"""Every metric, label and label value used by the alert rules, the Grafana dashboard and
the autoscaling queries in deploy/ exists in what the real binaries export, and the
dashboard shows every ompq metric family they export.

Starts ompq-server (port 0, --workers 0, metrics on loopback port 0) and one ompq-worker
(--device cpu, --metrics-listen on port 0; both log the port they bound), submits two jobs whose model is not a model
(one is cancelled while queued, the worker fails the other), so that every family has
series, then scrapes both /metrics endpoints.

Usage: check_metric_names.py REPO_DIR BIN_DIR"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import deploy_queries  # noqa: E402

# Exported only by a worker on a CUDA device: checked against the source instead.
CUDA_ONLY = {"ompq_worker_device_memory_bytes": ("workers/worker_metrics.cc", ["kind"])}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
GRPC_CODES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
}

errors = []


def fail(message):
    errors.append(message)
    print("FAIL:", message)


def logged_metrics_port(log_path, process, what):
    """The port a binary started with --metrics-listen=127.0.0.1:0 logs ("metrics on port N")."""
    def found():
        if process.poll() is not None:
            raise SystemExit(f"FAIL: {what} exited {process.returncode}:\n{log_path.read_text()[-3000:]}")
        return re.search(r"metrics on port (\d+)", log_path.read_text())
    wait_for(found, f"{what} to log its metrics port")
    return int(found().group(1))


def wait_for(predicate, what, limit=120):
    deadline = time.monotonic() + limit  # a safety bound, not a timing assertion
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"FAIL: timed out waiting for {what}")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    families = {}  # family name -> {"type": ..., "samples": {sample name: [labels dict]}}
    for line in text.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            families[match.group(1)] = {"type": match.group(2), "samples": {}}
            continue
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s", line)
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        name = match.group(1)
        family = next((f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in families), None)
        families[family]["samples"].setdefault(name, []).append(labels)
    return families


def run_binaries(bin_dir, work):
    ctl = [str(bin_dir / "ompqctl")]
    logs = []
    processes = []
    try:
        log = open(work / "server.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen(
            [str(bin_dir / "ompq-server"), "--listen=127.0.0.1:0", f"--port-file={work}/port",
             "--metrics-listen=127.0.0.1:0", f"--data-dir={work}/data",
             "--workers=0"], stdout=log, stderr=subprocess.STDOUT))
        port_file = work / "port"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), "the server's port file")
        server = f"127.0.0.1:{port_file.read_text().strip()}"
        metrics_port = logged_metrics_port(work / "server.log", processes[0], "ompq-server")
        ctl += ["--server", server, "--output", "json"]
        # Not TorchScript: the worker fails the job when it loads the model.
        (work / "model.pt").write_bytes(b"not a TorchScript model\n" * 40)
        (work / "calib.pt").write_bytes(b"not a tensor\n" * 40)

        def submit():
            out = subprocess.run(ctl + ["submit", str(work / "model.pt"), "--calib",
                                        str(work / "calib.pt"), "--size", "1MB"],
                                 check=True, capture_output=True, text=True, timeout=120).stdout
            return json.loads(out)["name"]

        failing, cancelled = submit(), submit()
        subprocess.run(ctl + ["cancel", cancelled], check=True, capture_output=True, timeout=120)
        log = open(work / "worker.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen(
            [str(bin_dir / "ompq-worker"), f"--server={server}", "--device=cpu",
             f"--work-dir={work}/work", "--metrics-listen=127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT))
        worker_metrics_port = logged_metrics_port(work / "worker.log", processes[1], "ompq-worker")
        waiter = subprocess.Popen(ctl + ["wait", failing, "--timeout", "300s"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(waiter)
        wait_for(lambda: waiter.poll() is not None or processes[1].poll() is not None,
                 "the job to end", limit=400)
        if processes[1].poll() is not None:
            raise SystemExit(f"FAIL: ompq-worker exited {processes[1].returncode} while running the job")
        out, err = waiter.communicate()
        state = json.loads(out)["state"] if out.strip() else err
        if state != "FAILED":
            raise SystemExit(f"FAIL: the job with a bad model ended {state!r}, expected FAILED")
        # The gauges are refreshed by the server's housekeeping (once a second).
        wait_for(lambda: any(l.get("state") == "FAILED" and l.get("reason")
                             for l in scrape(metrics_port).get("ompq_jobs_finished_total", {})
                             .get("samples", {}).get("ompq_jobs_finished_total", [])),
                 "ompq_jobs_finished_total{state=FAILED}")
        try:
            worker_families = scrape(worker_metrics_port)
        except OSError as e:
            raise SystemExit(f"FAIL: ompq-worker --metrics-listen=127.0.0.1:{worker_metrics_port} serves no /metrics: {e}")
        return scrape(metrics_port), worker_families
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
        if errors or sys.exc_info()[0] is not None:
            for name in ("server.log", "worker.log"):
                if (work / name).exists():
                    print(f"--- {name}:\n" + (work / name).read_text()[-3000:])


def main():
    repo, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    prometheus = yaml.safe_load((repo / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {c["job_name"] for c in prometheus["scrape_configs"]}
    target_labels = {"job", "instance"} | {r["target_label"] for c in prometheus["scrape_configs"]
                                           for r in c.get("relabel_configs", []) if "target_label" in r}
    with tempfile.TemporaryDirectory(prefix="ompq-deploy-metrics.") as tmp:
        server, worker = run_binaries(bin_dir, pathlib.Path(tmp))
    print(f"scraped {len(server)} server and {len(worker)} worker metric families")

    def lookup(name):
        """(series label sets, family type) of an exported sample name, or None."""
        exported = worker if name.startswith("ompq_worker_") else server
        for family in exported.values():
            if name in family["samples"]:
                return family["samples"][name], family["type"]
        return None

    queries = deploy_queries.load_queries(repo)
    checked = set()
    for where, expr in queries:
        metrics, labels = deploy_queries.names_in(expr)
        known_labels = set(target_labels)
        for name in metrics:
            checked.add(name)
            if name in PROMETHEUS_SERIES:
                known_labels |= PROMETHEUS_SERIES[name]
                continue
            if name in CUDA_ONLY:
                source, source_labels = CUDA_ONLY[name]
                text = (repo / source).read_text()
                if f'.Name("{name}")' not in text:
                    fail(f"{where}: {name} is not defined in {source}")
                known_labels |= {l for l in source_labels if f'{{"{l}"' in text}
                continue
            found = lookup(name)
            if found is None:
                fail(f"{where}: metric {name} is not exported by the real "
                     f"{'ompq-worker' if name.startswith('ompq_worker_') else 'ompq-server'}")
                continue
            series, kind = found
            for labelset in series:
                known_labels |= set(labelset)
            if name.endswith("_bucket") and kind == "histogram":
                if not any(name in a for a in deploy_queries.histogram_quantile_args(expr)):
                    fail(f"{where}: {name} is used outside histogram_quantile()")
            elif kind == "histogram" and not re.search(r"_(sum|count)$", name):
                fail(f"{where}: histogram {name} must be queried through _bucket/_sum/_count")
        for args in deploy_queries.histogram_quantile_args(expr):
            if "_bucket" not in args or not re.search(r"by\s*\([^)]*\ble\b", args):
                fail(f"{where}: histogram_quantile() needs a _bucket rate summed by (le, ...)")
        for label in labels - known_labels:
            fail(f"{where}: label {label} is on none of the series {sorted(metrics)}")
        # Label values in selectors: name{label="v"} / {label=~"a|b"}.
        for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
            for label, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', body):
                values = value.split("|") if op == "=~" else [value]
                if not all(re.fullmatch(r"[\w-]+", v) for v in values):
                    continue
                if label == "job":
                    observed = jobs
                elif label == "grpc_code":
                    observed = GRPC_CODES
                elif label in target_labels:
                    continue
                else:
                    found = lookup(name) or lookup(name + "_bucket")
                    observed = {s.get(label) for s in found[0]} if found else set()
                for v in values:
                    if v not in observed:
                        fail(f"{where}: {name}{{{label}=...}} uses value {v!r}, exported: {sorted(x for x in observed if x)}")
    # The dashboard shows every family ompq exports (so a new metric gets a panel).
    on_dashboard = {re.sub(r"_(bucket|sum|count)$", "", m)
                    for where, expr in queries if where.startswith("dashboard")
                    for m in deploy_queries.names_in(expr)[0]}
    for name in sorted(set(server) | set(worker)):
        if re.match(r"ompq_|grpc_server_", name) and name not in on_dashboard:
            fail(f"the dashboard shows nothing of {name}")
    print(f"checked {len(queries)} queries using {len(checked)} metrics: {sorted(checked)}")
    if errors:
        raise SystemExit(f"{len(errors)} problem(s)")
    print("ok: every metric, label and label value used in deploy/ is exported")


if __name__ == "__main__":
    main()
