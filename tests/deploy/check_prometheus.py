#!/usr/bin/python3
"""Validates deploy/prometheus with Prometheus' own promtool (Debian's prometheus package):
`check config` on prometheus.yml, `check rules` on alerts.yml, `test rules` on
alerts_test.yml (series in, alerts out), and `check rules` on every other PromQL query in
deploy/ (dashboard, KEDA trigger, prometheus-adapter rule) wrapped as recording rules, so
each one parses.

Debian builds Prometheus without Kubernetes service discovery, so promtool checks a copy of
prometheus.yml whose kubernetes_sd_configs are swapped for a static target; the relabelling
(and everything else) is checked as written, and check_manifests.py runs the relabelling
over the pod templates.

Usage: check_prometheus.py REPO_DIR"""
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import deploy_queries  # noqa: E402


def promtool(*args, cwd=None):
    result = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    print(f"$ promtool {' '.join(args)}\n{result.stdout}{result.stderr}".rstrip())
    if result.returncode != 0:
        raise SystemExit(f"FAIL: promtool {args[0]} {args[1]} exited {result.returncode}")


def main():
    repo = pathlib.Path(sys.argv[1]).resolve()
    here = pathlib.Path(__file__).resolve().parent
    if shutil.which("promtool") is None:
        raise SystemExit("FAIL: promtool not found: install Debian's prometheus package "
                         "(scripts/test.sh asks scripts/install-deps.sh for it)")
    prometheus_dir = repo / "deploy" / "prometheus"
    with tempfile.TemporaryDirectory(prefix="ompq-deploy-prom.") as tmp:
        tmp = pathlib.Path(tmp)
        config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
        for scrape in config["scrape_configs"]:
            if scrape.pop("kubernetes_sd_configs", None) is not None:
                scrape["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        for rule_file in config.get("rule_files", []):
            shutil.copy(prometheus_dir / rule_file, tmp / rule_file)
        promtool("check", "config", str(tmp / "prometheus.yml"))

        promtool("check", "rules", str(prometheus_dir / "alerts.yml"))
        promtool("test", "rules", "alerts_test.yml", cwd=here)

        others = [(w, q) for w, q in deploy_queries.load_queries(repo) if not w.startswith("alerts.yml")]
        rules = {"groups": [{"name": "deploy-queries", "rules": [
            {"record": f"ompq_check:query_{i}", "expr": q} for i, (_, q) in enumerate(others)]}]}
        (tmp / "queries.yml").write_text(yaml.safe_dump(rules))
        for i, (where, query) in enumerate(others):
            print(f"query {i}: {where}: {query}")
        promtool("check", "rules", str(tmp / "queries.yml"))
    print(f"ok: prometheus.yml, alerts.yml (with its unit tests) and {len(others)} other queries pass promtool")


if __name__ == "__main__":
    main()
