"""Every PromQL query in deploy/ (alert rules, Grafana dashboard, KEDA trigger,
prometheus-adapter rule), made evaluable, and the metric and label names each one uses.

Shared by check_prometheus.py (syntax, through promtool) and check_metric_names.py (names,
against the real binaries' /metrics)."""
import json
import pathlib
import re

import yaml

# Grafana and prometheus-adapter placeholders, replaced so promtool can parse the query.
_SUBSTITUTIONS = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("<<.Series>>", "ompq_jobs"),
    ("<<.LabelMatchers>>", 'namespace="ompq"'),
    ("<<.GroupBy>>", "namespace"),
]

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}


def _evaluable(expr):
    for placeholder, value in _SUBSTITUTIONS:
        expr = expr.replace(placeholder, value)
    return expr


def load_queries(repo):
    """[(where, query)] for every query in deploy/, placeholders substituted."""
    deploy = pathlib.Path(repo) / "deploy"
    queries = []
    alerts = yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            queries.append((f"alerts.yml {rule.get('alert') or rule.get('record')}", rule["expr"]))
    dashboard = json.loads((deploy / "grafana" / "ompq-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"dashboard panel '{panel['title']}' {target['refId']}", target["expr"]))
    for path in sorted((deploy / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ScaledObject":
                for trigger in doc["spec"]["triggers"]:
                    if trigger["type"] == "prometheus":
                        queries.append((f"{path.name} trigger", trigger["metadata"]["query"]))
    adapter = yaml.safe_load((deploy / "prometheus" / "prometheus-adapter.yaml").read_text())
    for rule in adapter.get("rules", []) + adapter.get("externalRules", []):
        queries.append((f"prometheus-adapter.yaml {rule['name']['as']}", rule["metricsQuery"]))
        queries.append((f"prometheus-adapter.yaml {rule['name']['as']} series", rule["seriesQuery"]))
    return [(where, _evaluable(expr)) for where, expr in queries]


def names_in(expr):
    """(metric names, label names) a PromQL expression uses. A small scanner, enough for
    the queries here: strings, label matchers, groupings and ranges are taken out first."""
    labels = set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)

    def matchers(match):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", match.group(1)))
        return " "

    expr = re.sub(r"\{([^}]*)\}", matchers, expr)

    def grouping(match):
        labels.update(re.findall(r"[a-zA-Z_]\w*", match.group(2)))
        return " "

    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", grouping, expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    metrics = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        metrics.add(name)
    return metrics, labels


def histogram_quantile_args(expr):
    """The argument text of each histogram_quantile(...) call in expr."""
    args = []
    for match in re.finditer(r"histogram_quantile\s*\(", expr):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        args.append(expr[match.end():i - 1])
    return args
