#!/usr/bin/python3
"""Checks the Kubernetes manifests and the Prometheus scrape configuration in deploy/ the
way a cluster would meet them, without a cluster: every YAML and JSON file parses; the
objects kustomization.yaml applies are well formed and consistent (selectors, Services,
Secrets and their keys, volumes, PVCs, scalers); the ompq containers pass only flags the
real binaries accept (their --help), with paths on the right volumes, probes on ports the
process serves (the server's: exec probes running `ompqctl health` over TLS, run for real
against a TLS ompq-server), GPU and memory settings that agree; and Prometheus' relabelling, applied
to the pod templates, scrapes exactly the ompq metrics ports.

Usage: check_manifests.py REPO_DIR BIN_DIR"""
import base64
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from binary_flags import accepted_flags, flag_name  # noqa: E402

errors = []
WORKLOADS = ("Deployment", "StatefulSet")
OMPQ_BINARIES = ("ompq-server", "ompq-worker")
# Flags whose directory the process writes: must be on a writable volume (read-only root).
WRITABLE_FLAGS = {"data_dir", "blob_dir", "work_dir", "port_file"}


def fail(message):
    errors.append(message)
    print("FAIL:", message)


def k8s_bytes(quantity):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?", str(quantity))
    units = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(match.group(1)) * units[match.group(2)]


def ompq_bytes(text):
    """ompq's ParseSize (common/units.cc): B, KB, MB, GB, KiB, MiB, GiB, case-insensitive."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text)
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "ki": 2**10, "kib": 2**10, "m": 1e6,
             "mb": 1e6, "mi": 2**20, "mib": 2**20, "g": 1e9, "gb": 1e9, "gi": 2**30, "gib": 2**30}
    return float(match.group(1)) * units[match.group(2).lower()]


def load_every_file(deploy):
    """Parses every YAML (all documents) and JSON file under deploy/."""
    parsed = {}
    for path in sorted(deploy.rglob("*")):
        try:
            if path.suffix in (".yaml", ".yml"):
                parsed[path] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            elif path.suffix == ".json":
                parsed[path] = [json.loads(path.read_text())]
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            fail(f"{path}: does not parse: {e}")
    return parsed


def secret_values(secret):
    values = dict(secret.get("stringData") or {})
    for key, value in (secret.get("data") or {}).items():
        values[key] = base64.b64decode(value).decode()
    return values


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def container_port(container, port):
    """The containerPort a probe/Service port (name or number) designates, or None."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def listen_port(address):
    return int(address.rsplit(":", 1)[1])


def check_objects(objects, where):
    for obj in objects:
        if not all(obj.get(k) for k in ("apiVersion", "kind")) or not obj.get("metadata", {}).get("name"):
            fail(f"{where}: an object lacks apiVersion, kind or metadata.name: {str(obj)[:120]}")
            continue
        name = obj["metadata"]["name"]
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            fail(f"{obj['kind']} {name}: not a valid DNS-1123 label")


def check_workload(workload, by_kind, flags, dockerfile_uid):
    name = workload["metadata"]["name"]
    what = f"{workload['kind']} {name}"
    selector = workload["spec"]["selector"]["matchLabels"]
    pod_labels = workload["spec"]["template"]["metadata"].get("labels", {})
    if any(pod_labels.get(k) != v for k, v in selector.items()):
        fail(f"{what}: selector {selector} does not match the pod labels {pod_labels}")
    spec = pod_spec(workload)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    for volume in volumes.values():
        if "secret" in volume:
            secret = by_kind["Secret"].get(volume["secret"]["secretName"])
            if secret is None:
                fail(f"{what}: volume {volume['name']} names a missing Secret {volume['secret']['secretName']}")
                continue
            for item in volume["secret"].get("items", []):
                if item["key"] not in secret_values(secret):
                    fail(f"{what}: Secret {secret['metadata']['name']} has no key {item['key']}")
        if "configMap" in volume and volume["configMap"]["name"] not in by_kind["ConfigMap"]:
            fail(f"{what}: volume {volume['name']} names a missing ConfigMap")
        if "persistentVolumeClaim" in volume and volume["persistentVolumeClaim"]["claimName"] not in by_kind["PersistentVolumeClaim"]:
            fail(f"{what}: volume {volume['name']} names a missing PVC {volume['persistentVolumeClaim']['claimName']}")
    for container in spec["containers"]:
        cwhat = f"{what} container {container['name']}"
        env = {e["name"]: e for e in container.get("env", [])}
        for e in env.values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secret = by_kind["Secret"].get(ref["name"])
                if secret is None or ref["key"] not in secret_values(secret):
                    fail(f"{cwhat}: env {e['name']} needs Secret {ref['name']} key {ref['key']}, not in the manifests")
        mounts = container.get("volumeMounts", [])
        for mount in mounts:
            if mount["name"] not in volumes and mount["name"] not in claim_templates:
                fail(f"{cwhat}: volumeMount {mount['name']} has no volume")
        for arg in container.get("command", []) + container.get("args", []):
            for var in re.findall(r"\$\((\w+)\)", arg):
                if var not in env:
                    fail(f"{cwhat}: {arg} uses $({var}), which is not in env")
        security = container.get("securityContext", {})
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            fail(f"{what}: pod securityContext.runAsNonRoot is not true")
        if security.get("readOnlyRootFilesystem") is not True or security.get("allowPrivilegeEscalation") is not False:
            fail(f"{cwhat}: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            fail(f"{cwhat}: capabilities are not dropped")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                fail(f"{cwhat}: resources.{kind} needs cpu and memory")
        if container.get("command", [None])[0] in OMPQ_BINARIES:
            check_ompq_container(workload, container, by_kind, flags, dockerfile_uid, volumes, env)


def resolve_env(value, env, by_kind):
    """An argument value with $(VAR) taken from env (literal or Secret key)."""
    def one(match):
        e = env.get(match.group(1), {})
        if "value" in e:
            return e["value"]
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in by_kind["Secret"]:
            return secret_values(by_kind["Secret"][ref["name"]]).get(ref["key"], "")
        return ""
    return re.sub(r"\$\((\w+)\)", one, value)


def check_ompq_container(workload, container, by_kind, flags, dockerfile_uid, volumes, env):
    binary = container["command"][0]
    what = f"{workload['kind']} {workload['metadata']['name']} ({binary})"
    spec = pod_spec(workload)
    if container.get("image") != "ompq":
        fail(f"{what}: image {container.get('image')!r}, expected 'ompq' (rewritten by kustomization images)")
    if spec.get("securityContext", {}).get("runAsUser") != dockerfile_uid:
        fail(f"{what}: runAsUser {spec.get('securityContext', {}).get('runAsUser')} is not the image's USER {dockerfile_uid}")
    args = {}
    for arg in container["command"][1:] + container.get("args", []):
        name = flag_name(arg)
        if name is None or "=" not in arg:
            fail(f"{what}: write flags as --name=value: {arg!r}")
            continue
        if name not in flags[binary]:
            fail(f"{what}: {binary} has no flag --{name} (its --help lists {sorted(flags[binary])})")
        args[name] = arg.split("=", 1)[1]
    mounts = sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))
    for name, value in args.items():
        if not value.startswith("/"):
            continue
        mount = next((m for m in mounts if value == m["mountPath"] or value.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if mount is None:
            fail(f"{what}: --{name}={value} is on the read-only root filesystem, not on a volume")
            continue
        volume = volumes.get(mount["name"], {})
        if name in WRITABLE_FLAGS and (mount.get("readOnly") or not ({"emptyDir", "persistentVolumeClaim"} & set(volume))):
            fail(f"{what}: --{name}={value} must be on a writable emptyDir or PVC volume")
        if "secret" in volume:
            relative = value[len(mount["mountPath"].rstrip("/")) + 1:]
            items = volume["secret"].get("items")
            paths = {i["path"]: i["key"] for i in items} if items else {
                k: k for k in secret_values(by_kind["Secret"].get(volume["secret"]["secretName"], {}))}
            if relative not in paths:
                fail(f"{what}: --{name}={value}: Secret volume {mount['name']} has no file {relative!r}")
    ports = {p["containerPort"]: p.get("name") for p in container.get("ports", [])}
    served = {}
    for name in ("listen", "metrics_listen"):
        if name in args:
            port = listen_port(args[name])
            served[port] = name
            if port not in ports:
                fail(f"{what}: --{name} port {port} is not a containerPort")
    if "metrics_listen" in args:
        port = listen_port(args["metrics_listen"])
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if ports.get(port) != "metrics" or annotations.get("prometheus.io/port") != str(port) \
                or annotations.get("prometheus.io/scrape") != "true":
            fail(f"{what}: metrics port {port} must be the containerPort named 'metrics' and "
                 f"the prometheus.io/port annotation, with prometheus.io/scrape: 'true'")
    if binary == "ompq-server":
        check_server(workload, container, args, served, by_kind, env, what)
    else:
        check_worker(workload, container, args, by_kind, env, what)


def check_server(workload, container, args, served, by_kind, env, what):
    if args.get("workers") != "0":
        fail(f"{what}: replicas run remote workers only: --workers=0")
    replicas = workload["spec"].get("replicas", 1)
    database = resolve_env(args.get("database", ""), env, by_kind)
    if replicas > 1 and not database.startswith("postgresql://"):
        fail(f"{what}: {replicas} replicas need a shared PostgreSQL --database, got {database!r}")
    blob_volume = next((v for m in container.get("volumeMounts", []) for v in pod_spec(workload).get("volumes", [])
                        if m["mountPath"] == args.get("blob_dir") and v["name"] == m["name"]), None)
    claim = (blob_volume or {}).get("persistentVolumeClaim", {}).get("claimName")
    pvc = by_kind["PersistentVolumeClaim"].get(claim)
    if replicas > 1 and (pvc is None or "ReadWriteMany" not in pvc["spec"]["accessModes"]):
        fail(f"{what}: {replicas} replicas need --blob-dir on a ReadWriteMany PVC")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if probe is None:
            fail(f"{what}: no {kind}")
            continue
        check_health_probe(workload, container, args, by_kind, kind, probe, what)


def check_health_probe(workload, container, args, by_kind, kind, probe, what):
    """The server's probes exec `ompqctl health` on the pod's own gRPC port: the kubelet's
    native grpc probe cannot do TLS. With TLS, the CA comes from a mounted Secret file and
    the name checked is one the certificate must carry (the Service's); the command is then
    run for real against a TLS ompq-server with such a certificate."""
    command = probe.get("exec", {}).get("command", [])
    if not command or command[0] != "ompqctl" or "health" not in command:
        fail(f"{what}: {kind} must be an exec probe running `ompqctl ... health`, got {probe}")
        return
    options = {flag_name(a): a.split("=", 1)[1] for a in command[1:] if flag_name(a) and "=" in a}
    host, _, port = options.get("server", "").rpartition(":")
    if host not in ("127.0.0.1", "localhost") or port != str(listen_port(args["listen"])):
        fail(f"{what}: {kind} must ask this pod's own --listen port on 127.0.0.1, got --server={options.get('server')}")
    timeout = options.get("timeout", "5s")
    if not re.fullmatch(r"\d+s", timeout) or int(timeout[:-1]) >= probe.get("timeoutSeconds", 1):
        fail(f"{what}: {kind}: ompqctl --timeout={timeout} must end before timeoutSeconds {probe.get('timeoutSeconds', 1)}")
    grace = pod_spec(workload).get("terminationGracePeriodSeconds", 30)
    if kind == "livenessProbe" and probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) <= grace:
        fail(f"{what}: livenessProbe would restart a draining (NOT_SERVING) server before its {grace} s grace ends")
    if "tls_cert" not in args:
        if "tls_ca" in options:
            fail(f"{what}: {kind} uses --tls-ca but the server serves plaintext")
        return
    ca = options.get("tls_ca", "")
    mount = next((m for m in container.get("volumeMounts", []) if ca.startswith(m["mountPath"].rstrip("/") + "/")), None)
    volume = next((v for v in pod_spec(workload).get("volumes", []) if mount and v["name"] == mount["name"]), {})
    items = {i["path"]: i["key"] for i in volume.get("secret", {}).get("items", [])}
    if mount is None or not mount.get("readOnly") or ca[len(mount["mountPath"].rstrip("/")) + 1:] not in items:
        fail(f"{what}: {kind}: --tls-ca={ca!r} is not a file of a read-only mounted Secret volume")
    services = [n for n, svc in by_kind["Service"].items()
                if all(workload["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())]
    if options.get("tls_server_name") not in services:
        fail(f"{what}: {kind}: --tls-server-name={options.get('tls_server_name')!r} must be the name clients and "
             f"workers dial, which the certificate carries (Service {services})")
        return
    if kind not in PROBES_RUN:
        PROBES_RUN.add(kind)
        run_probe(command, options["tls_server_name"], f"{what}: {kind}")


PROBES_RUN = set()
BIN_DIR = None


def run_probe(command, name, what):
    """Runs the probe command with the real ompqctl against a real TLS ompq-server whose
    certificate names `name` only (as deploy/README.md makes it), on a free port."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for step in (
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=probe-ca",
             "-keyout", "ca.key", "-out", "ca.crt"],
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", "tls.key",
             "-out", "tls.csr"],
            ["openssl", "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "tls.crt"]):
            (tmp / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")
            subprocess.run(step, cwd=tmp, check=True, capture_output=True, timeout=60)
        server = subprocess.Popen(
            [str(BIN_DIR / "ompq-server"), "--listen=127.0.0.1:0", f"--port-file={tmp / 'port'}", "--workers=0",
             "--metrics-listen=", f"--data-dir={tmp / 'data'}", f"--tls-cert={tmp / 'tls.crt'}",
             f"--tls-key={tmp / 'tls.key'}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                if (tmp / "port").exists() and (tmp / "port").read_text().strip():
                    break
                time.sleep(0.1)
            port = (tmp / "port").read_text().strip()
            argv = [str(BIN_DIR / "ompqctl")]
            for arg in command[1:]:
                if flag_name(arg) == "server":
                    arg = f"--server=127.0.0.1:{port}"
                elif flag_name(arg) == "tls_ca":
                    arg = f"--tls-ca={tmp / 'ca.crt'}"
                argv.append(arg)
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if result.returncode != 0 or result.stdout.strip() != "SERVING":
                fail(f"{what}: the probe command against a real TLS server exited {result.returncode}: "
                     f"{result.stdout.strip()} {result.stderr.strip()}")
            else:
                print(f"ok: {what}: `{' '.join(command)}` answers SERVING from a real TLS server")
        finally:
            server.terminate()
            server.wait(timeout=60)


def check_worker(workload, container, args, by_kind, env, what):
    host, _, port = args.get("server", "").rpartition(":")
    service = by_kind["Service"].get(host)
    server_pods = [w for w in by_kind["workloads"] if service and
                   all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())]
    service_port = next((p for p in (service or {}).get("spec", {}).get("ports", []) if str(p["port"]) == port), None)
    if service_port is None or len(server_pods) != 1:
        fail(f"{what}: --server={args.get('server')} is not a Service port of one server workload")
        return
    server_container = pod_spec(server_pods[0])["containers"][0]
    server_args = {flag_name(a): a.split("=", 1)[1] for a in server_container.get("args", []) if "=" in a}
    if container_port(server_container, service_port["targetPort"]) != listen_port(server_args.get("listen", ":0")):
        fail(f"{what}: Service {host} port {port} does not reach the server's --listen port")
    if "tls_cert" in server_args and "tls_ca" not in args:
        fail(f"{what}: the server serves TLS: the worker needs --tls-ca")
    if "auth_tokens" in server_args:
        token = args.get("token") or resolve_env("$(OMPQ_TOKEN)", env, by_kind)
        mount = next(m for m in server_container["volumeMounts"] if server_args["auth_tokens"].startswith(m["mountPath"]))
        volume = next(v for v in pod_spec(server_pods[0])["volumes"] if v["name"] == mount["name"])
        key = {i["path"]: i["key"] for i in volume["secret"]["items"]}[server_args["auth_tokens"].rsplit("/", 1)[1]]
        lines = [l.split() for l in secret_values(by_kind["Secret"][volume["secret"]["secretName"]])[key].splitlines()]
        if [token, "worker"] not in [[l[0], l[2]] for l in lines if len(l) == 3]:
            fail(f"{what}: its token is not a worker line of the server's --auth-tokens file")
    limits = container["resources"]["limits"]
    requests = container["resources"].get("requests", {})
    if args.get("device", "").startswith("cuda"):
        if int(limits.get("nvidia.com/gpu", 0)) < 1 or requests.get("nvidia.com/gpu", limits.get("nvidia.com/gpu")) != limits.get("nvidia.com/gpu"):
            fail(f"{what}: --device={args['device']} needs resources.limits nvidia.com/gpu >= 1 (requests equal)")
        if "memory_limit" in args:
            fail(f"{what}: --memory-limit is RLIMIT_AS, which CUDA's address-space reservations exceed")
    elif "nvidia.com/gpu" in limits:
        fail(f"{what}: requests a GPU but runs --device={args.get('device')}")
    if "memory_limit" in args and not ompq_bytes(args["memory_limit"]) < k8s_bytes(limits["memory"]):
        fail(f"{what}: --memory-limit={args['memory_limit']} must stay below the container limit {limits['memory']}")


def relabel(rules, labels):
    """Prometheus relabelling (keep, drop, replace) of one target; None when dropped."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        regex = re.compile(rule.get("regex", "(.*)"))
        action = rule.get("action", "replace")
        matched = regex.fullmatch(value)
        if action == "keep" and not matched or action == "drop" and matched:
            return None
        if action == "replace" and matched:
            labels[rule["target_label"]] = matched.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return labels


def check_prometheus_discovery(prometheus, by_kind, namespace):
    """Runs each scrape job's relabelling over every container port of every pod template,
    with the meta labels Kubernetes service discovery (role: pod) would give them."""
    sanitize = lambda s: re.sub(r"[^a-zA-Z0-9_]", "_", s)
    scraped = {}
    for config in prometheus["scrape_configs"]:
        for sd in config.get("kubernetes_sd_configs", []):
            if sd.get("role") != "pod" or namespace not in sd.get("namespaces", {}).get("names", [namespace]):
                fail(f"prometheus.yml job {config['job_name']}: must discover pods in namespace {namespace}")
        for workload in by_kind["workloads"]:
            meta = workload["spec"]["template"]["metadata"]
            base = {"__meta_kubernetes_namespace": namespace,
                    "__meta_kubernetes_pod_name": workload["metadata"]["name"] + "-0"}
            base.update({f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in meta.get("labels", {}).items()})
            base.update({f"__meta_kubernetes_pod_annotation_{sanitize(k)}": v for k, v in meta.get("annotations", {}).items()})
            for container in pod_spec(workload)["containers"]:
                for port in container.get("ports", []):
                    target = dict(base, __meta_kubernetes_pod_container_port_name=port.get("name", ""),
                                  __meta_kubernetes_pod_container_port_number=str(port["containerPort"]))
                    if relabel(config.get("relabel_configs", []), target) is not None:
                        scraped.setdefault((workload["metadata"]["name"], port["containerPort"]), []).append(config["job_name"])
    for workload in by_kind["workloads"]:
        for container in pod_spec(workload)["containers"]:
            for port in container.get("ports", []):
                key = (workload["metadata"]["name"], port["containerPort"])
                jobs = scraped.pop(key, [])
                if port.get("name") == "metrics" and len(jobs) != 1:
                    fail(f"prometheus.yml: metrics port {key} is scraped by {len(jobs)} jobs {jobs}, expected 1")
                elif port.get("name") != "metrics" and jobs:
                    fail(f"prometheus.yml: non-metrics port {key} is scraped by {jobs}")
    for config in prometheus["scrape_configs"]:
        print(f"prometheus.yml job {config['job_name']} keeps the pod ports it should")


def main():
    global BIN_DIR
    repo, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    BIN_DIR = bin_dir
    deploy = repo / "deploy"
    parsed = load_every_file(deploy)
    print(f"parsed {len(parsed)} YAML/JSON files, {sum(len(d) for d in parsed.values())} documents")
    flags = {b: accepted_flags(bin_dir / b) for b in OMPQ_BINARIES}
    uid = int(re.search(r"^USER\s+(\d+)", (repo / "Dockerfile").read_text(), re.M).group(1))

    k8s = deploy / "k8s"
    kustomization = parsed[k8s / "kustomization.yaml"][0]
    applied = []
    for resource in kustomization["resources"]:
        if (k8s / resource) not in parsed:
            fail(f"kustomization.yaml: resource {resource} does not exist")
        applied += parsed.get(k8s / resource, [])
    unlisted = {p.name for p in k8s.glob("*.yaml")} - set(kustomization["resources"]) - {"kustomization.yaml"}
    if unlisted:
        fail(f"kustomization.yaml does not list {sorted(unlisted)}")
    if not any(i["name"] == "ompq" for i in kustomization.get("images", [])):
        fail("kustomization.yaml: no images entry for the 'ompq' image")
    namespace = kustomization["namespace"]
    if not any(o["kind"] == "Namespace" and o["metadata"]["name"] == namespace for o in applied):
        fail(f"no Namespace {namespace} in the applied objects")
    optional = [o for p in sorted((k8s / "optional").glob("*.yaml")) for o in parsed[p]]
    check_objects(applied + optional, "deploy/k8s")
    seen = set()
    for obj in applied:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            fail(f"{key} is defined twice")
        seen.add(key)

    by_kind = {k: {o["metadata"]["name"]: o for o in applied if o["kind"] == k}
               for k in ("Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment")}
    by_kind["workloads"] = [o for o in applied if o["kind"] in WORKLOADS]
    for secret in by_kind["Secret"].values():
        if secret.get("type") == "kubernetes.io/tls" and not {"tls.crt", "tls.key"} <= set(secret_values(secret)):
            fail(f"Secret {secret['metadata']['name']}: type kubernetes.io/tls needs tls.crt and tls.key")
        for key, value in secret_values(secret).items():
            if "CHANGE-ME" not in value:
                fail(f"Secret {secret['metadata']['name']} key {key}: a template must hold CHANGE-ME placeholders, not real values")
    for workload in by_kind["workloads"]:
        check_workload(workload, by_kind, flags, uid)
    for obj in applied:
        if obj["kind"] in ("Service", "PodDisruptionBudget"):
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matches = [w for w in by_kind["workloads"]
                       if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]
            if len(matches) != 1:
                fail(f"{obj['kind']} {obj['metadata']['name']}: selector {selector} matches {len(matches)} workloads")
            elif obj["kind"] == "Service":
                for port in obj["spec"]["ports"]:
                    if not any(container_port(c, port["targetPort"]) for c in pod_spec(matches[0])["containers"]):
                        fail(f"Service {obj['metadata']['name']}: targetPort {port['targetPort']} is no container port")

    adapter = yaml.safe_load((deploy / "prometheus" / "prometheus-adapter.yaml").read_text())
    adapter_metrics = {r["name"]["as"] for r in adapter.get("externalRules", [])}
    targets = {}
    for obj in applied + optional:
        if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
            target = obj["spec"]["scaleTargetRef"]["name"]
            if target not in by_kind["Deployment"]:
                fail(f"{obj['kind']} {obj['metadata']['name']}: scales a missing Deployment {target}")
            if obj in applied:
                targets.setdefault(target, []).append(obj["kind"])
        if obj["kind"] == "ScaledObject":
            for trigger in obj["spec"]["triggers"]:
                meta = trigger["metadata"]
                if trigger["type"] != "prometheus" or not meta.get("serverAddress") or float(meta["threshold"]) <= 0:
                    fail(f"ScaledObject {obj['metadata']['name']}: needs a prometheus trigger with serverAddress and threshold > 0")
        if obj["kind"] == "HorizontalPodAutoscaler":
            for metric in obj["spec"]["metrics"]:
                if metric["type"] == "External" and metric["external"]["metric"]["name"] not in adapter_metrics:
                    fail(f"HPA {obj['metadata']['name']}: external metric {metric['external']['metric']['name']} "
                         f"has no prometheus-adapter rule ({sorted(adapter_metrics)})")
    for target, scalers in targets.items():
        if len(scalers) > 1:
            fail(f"Deployment {target} has {len(scalers)} autoscalers applied: {scalers}")
    if not any(w["metadata"]["name"] in targets for w in by_kind["workloads"]):
        fail("no worker Deployment is autoscaled")

    prometheus = parsed[deploy / "prometheus" / "prometheus.yml"][0]
    check_prometheus_discovery(prometheus, by_kind, namespace)
    jobs = {c["job_name"] for c in prometheus["scrape_configs"]}
    for group in parsed[deploy / "prometheus" / "alerts.yml"][0]["groups"]:
        for rule in group["rules"]:
            for job in re.findall(r'job\s*=\s*"([^"]+)"', rule["expr"]):
                if job not in jobs:
                    fail(f"alerts.yml {rule['alert']}: job {job!r} is not a scrape job of prometheus.yml")
    dashboard = parsed[deploy / "grafana" / "ompq-dashboard.json"][0]
    for panel in dashboard["panels"]:
        if panel["type"] != "row" and not panel.get("targets"):
            fail(f"dashboard panel {panel['title']!r} has no query")
    print(f"checked {len(applied)} applied objects and {len(optional)} optional ones")
    if errors:
        raise SystemExit(f"{len(errors)} problem(s)")
    print("ok: deploy/ manifests are consistent and use only flags the binaries accept")


if __name__ == "__main__":
    main()
