#!/usr/bin/env python3
"""The container.training Kubernetes lessons replayed with our files, without a cluster.

Run by scripts/test/suites/kubernetes/kubernetes.sh (in the venv of scripts/test/lib/kubernetes-venv.sh).

  k8s_lessons.py static   each lesson's own commands, offline (kubectl --dry-run=client / --local,
                          kubectl kustomize, Helm renders, kubernetes-validate --strict), then what a
                          cluster would do with the objects the lesson ends with: every Service's
                          targetPort is the port its pods listen on, every URL the app calls names a
                          Service with endpoints, probes and scrape annotations hit the listening port,
                          env names are unique, names are DNS names, images are ours, and the
                          NetworkPolicy admits the lesson's traffic and no other
  k8s_lessons.py all      static, then run (what scripts/test/suites/kubernetes/kubernetes.sh runs)
  k8s_lessons.py run      shipping images: registry:2 on a node port, scripts/push.sh to it, a pull back
                          (scripts/test/suites/kubernetes/k8s_chapters.py); the DaemonSet lesson under Docker: rng's DaemonSet made from
                          `kubectl create deployment --dry-run=client -o yaml` beside the rng
                          Deployment of k8s/dockercoins.yaml, behind its Service: every rng pod serves
                          the workers and 10 workers mine above one rng's 10 hashes/s

Environment: as kubernetes.py (TAG, PREFIX, KUBE_VERSION).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubernetes as kt

ROOT = kt.ROOT
K8S = kt.K8S
CHART = kt.CHART
DOCS = ROOT / "docs" / "kubernetes.md"
KUBECTL = Path(sys.executable).with_name("kubectl")
NODES = 2  # the workshop's clusters: a DaemonSet has one pod on each worker node
OUR = re.compile(r"^(localhost/dockercoins|127\.0\.0\.1:5000)/(rng|hasher|worker|webui):[\w.-]+$")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Bitnami's Redis with Sentinel: each Sentinel by its pod's name under the headless Service, not the
# Service redis in front of all three (which reaches one at random: a stale one may answer).
SENTINELS = "redis-node-0.redis-headless:26379, redis-node-1.redis-headless:26379, redis-node-2.redis-headless:26379"
LESSONS: list[tuple[str, str, str]] = []  # (lesson, route, result) for the summary


def log(text: str) -> None:
    print(f"k8s-lessons: {text}", flush=True)


# --- The lessons' commands, offline ------------------------------------------------


def kubectl(*args: str, stdin: str | None = None) -> list[dict]:
    """kubectl with a client-side dry run (or --local): the objects it would send."""
    proc = subprocess.run([str(KUBECTL), *args], input=stdin, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return [o for o in kt.documents(proc.stdout) if o]


def kubectl_on(obj: dict, *args: str) -> dict:
    """`kubectl <verb> <args> -f obj --local -o yaml`: a change made to one object without a server."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(obj, f)
        f.flush()
        (out,) = kubectl(*args, "-f", f.name, "--local", "-o", "yaml")
    return out


def create_deployment(name: str, image: str, *command: str) -> dict:
    args = ["create", "deployment", name, f"--image={image}", "-o", "yaml", "--dry-run=client"]
    if command:
        args += ["--", *command]
    (d,) = kubectl(*args)
    return d


def expose(deployment: dict, port: int, kind: str = "ClusterIP", target_port: int | None = None) -> dict:
    """`kubectl expose deployment NAME --port P [--type T]` (needs an API server: done by its rule here):
    a Service of the Deployment's name, its selector the Deployment's matchLabels, targetPort = port."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": deployment["metadata"]["name"], "labels": dict(deployment["metadata"].get("labels", {}))},
        "spec": {
            "selector": dict(deployment["spec"]["selector"]["matchLabels"]),
            "ports": [{"port": port, "protocol": "TCP", "targetPort": target_port or port}],
            "type": kind,
        },
    }
    return svc


def scale(deployment: dict, replicas: int) -> dict:
    """`kubectl scale deployment NAME --replicas N` (needs an API server): the same change with patch --local."""
    return kubectl_on(deployment, "patch", "--type=merge", "-p", json.dumps({"spec": {"replicas": replicas}}))


def manifest(name: str) -> list[dict]:
    return kt.documents((K8S / name).read_text())


def chart(values: dict | None = None, name: str = "dockercoins", namespace: str = "default") -> list[dict]:
    out = kt.helm().Chart.load(str(CHART)).render(values or {}, name=name, namespace=namespace)
    return [o for p in sorted(out) if p.endswith(".yaml") for o in kt.documents(out[p])]


def validate(label: str, objects: list[dict]) -> list[str]:
    import kubernetes_validate

    errors = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, kt.KUBE_VERSION, strict=True)
        except Exception as err:  # noqa: BLE001  the validator's own message is the finding
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {str(err).splitlines()[0]}")
    return errors


# --- What a cluster would do with the objects ----------------------------------------


def pods(objects: list[dict]) -> list[dict]:
    """The pods the workloads would make (a DaemonSet: one per node), with their labels."""
    out = []
    for o in objects:
        ns = o["metadata"].get("namespace", "default")
        if o["kind"] == "Pod":
            out.append({"name": o["metadata"]["name"], "namespace": ns, "labels": dict(o["metadata"].get("labels", {})),
                        "spec": o["spec"], "owner": o})
            continue
        spec = kt.pod_spec(o)
        if spec is None:
            continue
        labels = dict(o["spec"]["template"]["metadata"].get("labels", {}))
        n = NODES if o["kind"] == "DaemonSet" else o["spec"].get("replicas", 1)
        for i in range(n):
            extra = {"pod-template-hash": "5d8f7c9b6"} if o["kind"] == "Deployment" else {"controller-revision-hash": "7b9"}
            out.append({"name": f"{o['metadata']['name']}-{o['kind'][0].lower()}{i}", "namespace": ns,
                        "labels": {**labels, **extra}, "spec": spec, "owner": o})
    return out


def listening_port(container: dict) -> int | None:
    """The port the container's process listens on: ours on PORT (default 80, the images' default),
    redis on 6379, other images on their declared containerPort."""
    image = container["image"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if OUR.match(image) or re.match(r"^[\w.:/-]*/(rng|hasher|worker|webui):", image):
        return int(env.get("PORT") or 80)
    if re.match(r"^(docker\.io/)?(library/)?redis(:|$)", image):
        return 26379 if "--sentinel" in (container.get("command") or []) + (container.get("args") or []) else 6379
    if "httplat" in image:
        return 9080
    ports = container.get("ports", [])
    return ports[0]["containerPort"] if ports else None


def resolve(port, container: dict) -> int | None:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def selected(selector: dict, pod: dict) -> bool:
    return bool(selector) and all(pod["labels"].get(k) == v for k, v in selector.items())


def endpoints(svc: dict, all_pods: list[dict]) -> tuple[list[dict], list[str]]:
    """The pods that would be the Service's endpoints, and the selected pods that would not
    (targetPort not a port their container listens on)."""
    ns = svc["metadata"].get("namespace", "default")
    good, bad = [], []
    for pod in all_pods:
        if pod["namespace"] != ns or not selected(svc["spec"].get("selector", {}), pod):
            continue
        # A named targetPort may be any container's port; a number, one some container listens on.
        containers = pod["spec"]["containers"]
        listens = listening_port(containers[0])
        misses = [f"{p.get('targetPort', p['port'])}" for p in svc["spec"]["ports"]
                  if not any(resolve(p.get("targetPort", p["port"]), c) == listening_port(c) for c in containers)]
        if misses:
            bad.append(f"{pod['name']} (listens on {listens}; targetPort {', '.join(misses)})")
        else:
            good.append(pod)
    return good, bad


def url_target(url: str, default_port: int) -> tuple[str, int]:
    m = re.match(r"^\w+://([^:/]+)(?::(\d+))?", url)
    return (m.group(1), int(m.group(2) or default_port)) if m else ("", 0)


def app_urls(container: dict) -> dict[str, str]:
    """The URLs our worker and web UI call, with the services' defaults."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    m = re.search(r"/(worker|webui):", container["image"])
    if not m or (container.get("args") or [""])[0] == "healthcheck":
        return {}  # not ours, or the helm test pod's `webui healthcheck --url`, which reads no Redis
    urls = {"REDIS_URL": env.get("REDIS_URL") or "redis://redis:6379"}
    if env.get("REDIS_SENTINELS"):  # the Sentinels name the primary; REDIS_URL is not used
        del urls["REDIS_URL"]
        for i, address in enumerate(env["REDIS_SENTINELS"].split(",")):
            urls[f"REDIS_SENTINELS[{i}]"] = f"tcp://{address}"
    if m.group(1) == "worker":
        urls["RNG_URL"] = env.get("RNG_URL") or "http://rng"
        urls["HASHER_URL"] = env.get("HASHER_URL") or "http://hasher"
    return urls


def find_service(objects: list[dict], host: str, ns: str) -> dict | None:
    parts = host.split(".")
    name, svc_ns = parts[0], parts[1] if len(parts) > 1 else ns
    return next((o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name
                 and o["metadata"].get("namespace", "default") == svc_ns), None)


def pod_address_problem(objects: list[dict], host: str, ns: str, port: int) -> str | None:
    """A StatefulSet pod's own DNS name under its headless Service (<set>-<i>.<service>[.<namespace>...]):
    "" if it names such a pod listening on the port, a problem if it names one wrongly, None if it is no such name."""
    parts = host.split(".")
    m = re.match(r"^(.+)-(\d+)$", parts[0])
    if len(parts) < 2 or not m:
        return None
    svc_ns = parts[2] if len(parts) > 2 else ns
    sts = next((o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == m.group(1)
                and o["metadata"].get("namespace", "default") == svc_ns), None)
    if sts is None:
        return None
    svc = find_service(objects, f"{parts[1]}.{svc_ns}", ns)
    if sts["spec"].get("serviceName") != parts[1] or svc is None or svc["spec"].get("clusterIP") != "None":
        return f"{host}: {parts[1]} is not the headless Service (clusterIP None) of StatefulSet {m.group(1)}"
    if int(m.group(2)) >= sts["spec"].get("replicas", 1):
        return f"{host}: StatefulSet {m.group(1)} has {sts['spec'].get('replicas', 1)} pods"
    if not any(listening_port(c) == port for c in sts["spec"]["template"]["spec"]["containers"]):
        return f"{host}: no container of {m.group(1)} listens on {port}"
    return ""


def cluster_problems(objects: list[dict], images_allowed=()) -> list[str]:
    """What a cluster would refuse or get wrong with these objects."""
    problems: list[str] = []
    all_pods = pods(objects)
    for o in objects:
        name = o["metadata"]["name"]
        pattern = DNS_LABEL if o["kind"] in ("Service", "Namespace") else DNS_SUBDOMAIN
        if not pattern.match(name) or len(name) > 253:
            problems.append(f"{o['kind']} name {name!r} is not a valid DNS name")
    for o in objects:
        if o["kind"] != "Service":
            continue
        good, bad = endpoints(o, all_pods)
        if bad:
            problems.append(f"Service {o['metadata']['name']}: no endpoint on {'; '.join(bad)}")
        if not good and o["spec"].get("selector"):
            problems.append(f"Service {o['metadata']['name']}: no endpoint at all")
    seen = set()
    for pod in all_pods:
        owner = pod["owner"]
        key = (owner["kind"], owner["metadata"]["name"], pod["namespace"])
        if key in seen:
            continue
        seen.add(key)
        for c in pod["spec"]["containers"]:
            where = f"{owner['kind']}/{owner['metadata']['name']}/{c['name']}"
            names = [e["name"] for e in c.get("env", [])]
            dups = sorted({n for n in names if names.count(n) > 1})
            if dups:
                problems.append(f"{where}: env {', '.join(dups)} set twice")
            if not (OUR.match(c["image"]) or c["image"].split(":")[0] == "redis" or c["image"] in images_allowed):
                problems.append(f"{where}: image {c['image']} is not ours")
            listens = listening_port(c)
            for which in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = c.get(which) or {}
                for kind in ("httpGet", "tcpSocket"):
                    if kind in probe and resolve(probe[kind]["port"], c) != listens:
                        problems.append(f"{where}: {which} on port {probe[kind]['port']}, listens on {listens}")
            annotations = pod["owner"].get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
            if annotations.get("prometheus.io/scrape") == "true" and int(annotations.get("prometheus.io/port", 0)) != listens:
                problems.append(f"{where}: prometheus.io/port {annotations.get('prometheus.io/port')}, listens on {listens}")
            for var, url in app_urls(c).items():
                host, port = url_target(url, 6379 if var == "REDIS_URL" else 26379 if var.startswith("REDIS_SENTINELS")
                                        else 80)
                own = pod_address_problem(objects, host, pod["namespace"], port)
                if own is not None:
                    if own:
                        problems.append(f"{where}: {var}={url}: {own}")
                    continue
                svc = find_service(objects, host, pod["namespace"])
                if svc is None:
                    problems.append(f"{where}: {var}={url}: no Service {host} in {pod['namespace']}")
                elif port not in [p["port"] for p in svc["spec"]["ports"]]:
                    problems.append(f"{where}: {var}={url}: Service {host} has no port {port}")
                elif not endpoints(svc, all_pods)[0]:
                    problems.append(f"{where}: {var}={url}: Service {host} has no endpoint")
    return problems


# NetworkPolicy, as the API defines it (Ingress only: our policies and the workshop's have no Egress).


def label_match(selector: dict, labels: dict) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        has, value = e["key"] in labels, labels.get(e["key"])
        op = e["operator"]
        if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e.get("values", [])) \
                or (op == "Exists" and not has) or (op == "DoesNotExist" and has):
            return False
    return True


def admits(objects: list[dict], src: dict, dst: dict, port: int) -> bool:
    """src: {"namespace", "labels", "ns_labels"} of the client pod (or an outside address: namespace None);
    dst: a pod from pods(). True if the NetworkPolicies of dst's namespace let src reach dst's port."""
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                and o["metadata"].get("namespace", "default") == dst["namespace"]
                and label_match(o["spec"].get("podSelector", {}), dst["labels"])
                and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True
    c = dst["spec"]["containers"][0]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []) or []:
            ports = rule.get("ports")
            if ports and not any(resolve(p.get("port"), c) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    if src["namespace"] is None:
                        return True
                    continue
                if src["namespace"] is None:
                    continue
                if "namespaceSelector" in peer:
                    ns_ok = label_match(peer["namespaceSelector"], src["ns_labels"])
                else:
                    ns_ok = src["namespace"] == dst["namespace"]
                pod_ok = label_match(peer.get("podSelector", {}), src["labels"]) if "podSelector" in peer else True
                if ns_ok and pod_ok:
                    return True
    return False


def client(namespace: str | None, labels: dict | None = None) -> dict:
    return {"namespace": namespace, "labels": labels or {},
            "ns_labels": {"kubernetes.io/metadata.name": namespace} if namespace else {}}


def traffic_problems(objects: list[dict], allowed: list[tuple[str, dict, str, int]],
                     refused: list[tuple[str, dict, str, int]]) -> list[str]:
    """Each (what, client, app label of the destination pods, port) must be admitted / refused."""
    problems = []
    all_pods = pods(objects)
    for want, cases in ((True, allowed), (False, refused)):
        for what, src, app, port in cases:
            # An app's own pod as the client: the labels its workload gives it.
            own = next((p for p in all_pods if src["namespace"] == p["namespace"]
                        and p["labels"].get("app") == src["labels"].get("app")), None)
            if own is not None and set(src["labels"]) == {"app"}:
                src = {**src, "labels": own["labels"]}
            targets = [p for p in all_pods if p["labels"].get("app") == app]
            if not targets:
                problems.append(f"{what}: no {app} pod")
            for dst in targets:
                if admits(objects, src, dst, port) != want:
                    problems.append(f"{what}: {'refused' if want else 'admitted'} at {dst['name']}:{port}")
    return problems


def lesson(name: str, route: str, objects: list[dict], images_allowed=(), extra: list[str] | None = None,
           replayed: str = "") -> None:
    errors = validate(name, objects)
    problems = cluster_problems(objects, images_allowed) + (extra or [])
    kt.check(not errors, f"{name} ({route}): {len(objects)} objects valid (kubernetes-validate --strict)", "; ".join(errors))
    kt.check(not problems, f"{name} ({route}): Services reach their pods, URLs and probes resolve, images ours"
             + (f"; {replayed}" if replayed else ""), "; ".join(problems))
    LESSONS.append((name, route, "ok" if not errors and not problems else "FAIL"))


# --- The lessons --------------------------------------------------------------------


def app_by_kubectl_create(tag: str = "v0.1") -> list[dict]:
    """ourapponkube: kubectl create deployment x5, kubectl expose x4."""
    deps = {"redis": create_deployment("redis", "redis")}
    for s in ("hasher", "rng", "webui", "worker"):
        deps[s] = create_deployment(s, f"localhost/dockercoins/{s}:{tag}")
    return [*deps.values(), expose(deps["redis"], 6379), expose(deps["rng"], 80), expose(deps["hasher"], 80),
            expose(deps["webui"], 80, "NodePort")]


def daemonset_from_kubectl() -> tuple[dict, list[str]]:
    """daemonset: kubectl create deployment rng ... -o yaml --dry-run=client, kind -> DaemonSet,
    then the lesson's error (spec.replicas, spec.strategy), then replicas and strategy removed."""
    text = subprocess.run([str(KUBECTL), "create", "deployment", "rng", "--image=localhost/dockercoins/rng:v0.1",
                           "-o", "yaml", "--dry-run=client"], capture_output=True, text=True, check=True).stdout
    text = text.replace("kind: Deployment", "kind: DaemonSet")  # the lesson's sed
    (ds,) = kt.documents(text)
    first = validate("daemonset", [ds])
    ds["spec"].pop("replicas", None)
    ds["spec"].pop("strategy", None)
    ds.pop("status", None)
    return ds, first


def replace(objects: list[dict], new: dict) -> list[dict]:
    key = (new["kind"], new["metadata"]["name"])
    return [new if (o["kind"], o["metadata"]["name"]) == key else o for o in objects]


def get(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def in_namespace(objects: list[dict], ns: str) -> tuple[list[dict], list[str]]:
    """`kubectl apply -n NS -f FILE`: refused for an object that names another namespace."""
    out, problems = [], []
    for o in copy.deepcopy(objects):
        have = o["metadata"].get("namespace")
        if have and have != ns:
            problems.append(f"kubectl apply -n {ns}: {o['kind']}/{o['metadata']['name']} names namespace {have}")
        o["metadata"]["namespace"] = ns
        out.append(o)
    return out, problems


def label_pods_and_select(objects: list[dict]) -> tuple[list[dict], list[str]]:
    """labels-annotations: kubectl label pods -l app=rng active=yes; kubectl edit service rng
    (selector + active: "yes"); kubectl label pod -l app=rng,pod-template-hash active-.
    Pods are modelled as bare Pods carrying the labels they would have after the commands."""
    problems = []
    rng_pods = [p for p in pods(objects) if p["labels"].get("app") == "rng"]
    kinds = sorted({p["owner"]["kind"] for p in rng_pods})
    if kinds != ["DaemonSet", "Deployment"]:
        problems.append(f"the lesson needs the rng Deployment and DaemonSet, found {kinds}")
    out = [o for o in objects if not (kt.pod_spec(o) and o["spec"]["template"]["metadata"]["labels"].get("app") == "rng")]
    for p in rng_pods:
        labels = dict(p["labels"])
        if "pod-template-hash" not in labels:
            labels["active"] = "yes"  # the Deployment's pod had it too, then lost it: `active-`
        out.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p["name"], "labels": labels,
                                                                    "namespace": p["namespace"]}, "spec": p["spec"]})
    svc = copy.deepcopy(get(out, "Service", "rng"))
    svc["spec"]["selector"]["active"] = "yes"
    out = replace(out, svc)
    good, _ = endpoints(svc, pods(out))
    if len(good) != NODES:
        problems.append(f"Service rng app=rng,active=yes: {len(good)} endpoints, {NODES} DaemonSet pods expected")
    return out, problems


def cmd_static() -> None:
    log(f"replaying the lessons (kubectl {KUBECTL.exists() and 'found' or 'MISSING'}, Kubernetes {kt.KUBE_VERSION}, "
        f"{NODES} nodes for a DaemonSet)")
    created = app_by_kubectl_create()
    manifests = manifest("dockercoins.yaml")
    lesson("ourapponkube", "kubectl create deployment + expose", created,
           replayed="5 create deployment --dry-run=client, 4 expose (by its rule)")
    lesson("ourapponkube", "kubectl apply -f k8s/dockercoins.yaml", manifests)

    # kubectlexpose: a pod from `kubectl run` reaches a Service by its name.
    # `kubectl run` needs an API server even with --dry-run=client: its pod by its rule (label run=NAME).
    shell = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "myshell", "labels": {"run": "myshell"}},
             "spec": {"containers": [{"name": "myshell", "image": "archlinux"}]}}
    good, _ = endpoints(get(created, "Service", "rng"), pods(created))
    kt.check(bool(good) and shell["metadata"]["labels"] == {"run": "myshell"},
             f"kubectlexpose: a pod from kubectl run (labels {shell['metadata']['labels']}) calls http://rng: {len(good)} endpoint")
    LESSONS.append(("kubectlexpose", "kubectl run + Service name", "ok" if good else "FAIL"))

    for route, objs in (("kubectl create", created), ("k8s/dockercoins.yaml", manifests)):
        scaled = replace(objs, scale(get(objs, "Deployment", "worker"), 10))
        lesson("scalingdockercoins", route, scaled, replayed="scale deploy/worker --replicas=10; httping rng, hasher")

    # daemonset, on both routes; then labels and selectors on what it leaves.
    ds, first = daemonset_from_kubectl()
    kt.check(any("replicas" in e for e in first) and any("strategy" in e for e in first),
             "daemonset: kubectl apply of the edited file is refused for spec.replicas and spec.strategy, "
             "as the lesson shows", "; ".join(first) or "accepted")
    for route, objs in (("kubectl create", created), ("k8s/dockercoins.yaml", manifests)):
        with_ds = objs + [ds]
        lesson("daemonset", route, with_ds, replayed=f"rng Deployment + DaemonSet ({NODES} nodes) behind Service rng")
        labelled, problems = label_pods_and_select(with_ds)
        lesson("labels-selectors", route, labelled, extra=problems,
               replayed="label pods active=yes, Service selector + active, label active- on the Deployment's pod")
    lesson("daemonset", "helm --set rng.kind=DaemonSet", chart({"rng": {"kind": "DaemonSet"}}))
    text = DOCS.read_text()
    start = text.find("### rng as a DaemonSet")
    section = text[start:text.find("\n### ", start + 1)]
    commands = "".join(re.findall(r"```console\n(.*?)```", section, re.DOTALL))
    kt.check("kubectl delete deploy" not in commands and "kubectl create deployment rng" in commands,
             "docs/kubernetes.md: the DaemonSet lesson builds rng.yaml with kubectl and keeps the rng Deployment "
             "(the next lesson, labels and selectors, needs it)")

    # rollout: kubectl set image finds the container by the image's name; the lesson's patch applies.
    for route, objs in (("kubectl create", created), ("k8s/dockercoins.yaml", manifests)):
        w = kubectl_on(get(objs, "Deployment", "worker"), "set", "image", "worker=localhost/dockercoins/worker:v0.2")
        image = w["spec"]["template"]["spec"]["containers"][0]["image"]
        patch = ("spec:\n  template:\n    spec:\n      containers:\n      - name: worker\n"
                 "        image: localhost/dockercoins/worker:v0.1\n  strategy:\n    rollingUpdate:\n"
                 "      maxUnavailable: 0\n      maxSurge: 1\n  minReadySeconds: 10\n")
        w2 = kubectl_on(w, "patch", "-p", json.dumps(yaml.safe_load(patch)))
        extra = [] if image.endswith(":v0.2") else [f"set image left {image}"]
        if w2["spec"]["template"]["spec"]["containers"][0]["image"] != "localhost/dockercoins/worker:v0.1" \
                or len(w2["spec"]["template"]["spec"]["containers"]) != 1:
            extra.append("the lesson's patch did not merge into the worker container")
        lesson("rollout", route, replace(objs, w2), extra=extra,
               replayed="set image worker=...:v0.2, patch maxUnavailable 0 / maxSurge 1 / minReadySeconds 10")

    # healthchecks-more: the app in namespace yellow, the lesson's liveness probe on rng's / port 80.
    yellow, problems = in_namespace(manifests, "yellow")
    rng = copy.deepcopy(get(yellow, "Deployment", "rng"))
    rng["spec"]["template"]["spec"]["containers"][0]["livenessProbe"] = {
        "httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 30, "periodSeconds": 5}
    lesson("healthchecks-more", "k8s/dockercoins.yaml -n yellow", replace(yellow, rng), extra=problems,
           replayed="liveness httpGet / port 80 added to rng")

    helm_lessons()

    # kustomize: images: rewrites of the lesson, on k8s/.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(K8S / "dockercoins.yaml", tmp)
        images = "".join(f"- name: localhost/dockercoins/{s}\n  newName: 127.0.0.1:5000/{s}\n" for s in ("hasher", "rng", "webui"))
        Path(tmp, "kustomization.yaml").write_text(
            "resources: [dockercoins.yaml]\nimages:\n" + images
            + "- name: localhost/dockercoins/worker\n  newName: 127.0.0.1:5000/worker\n  newTag: v0.2\n")
        objs = kubectl("kustomize", tmp)
        worker_image = kt.pod_spec(get(objs, "Deployment", "worker"))["containers"][0]["image"]
        lesson("kustomize", "kubectl kustomize, images:", objs,
               extra=[] if worker_image == "127.0.0.1:5000/worker:v0.2" else [f"worker image {worker_image}"],
               replayed="4 images: rewritten to 127.0.0.1:5000, worker newTag v0.2")
    objs = kubectl("kustomize", str(K8S))
    lesson("kustomize", "kubectl apply -k k8s/", objs)

    netpol_lessons(created, manifests)
    namespaces_and_prometheus(manifests)
    redis_checks()

    # record, accessinternal, the kustomize lab, shipping images, Tilt / Flux / Argo CD / Kaniko.
    import k8s_chapters

    k8s_chapters.static(sys.modules[__name__])


def helm_lessons() -> None:
    h = kt.helm()
    # helm-create-basic-chart: helm create, templates replaced by k8s/dockercoins.yaml, installed in helmcoins.
    with tempfile.TemporaryDirectory() as tmp:
        h.Chart.create("dockercoins", tmp)
        path = Path(tmp, "dockercoins")
        shutil.move(str(path / "templates"), str(path / "default-templates"))
        (path / "templates").mkdir()
        shutil.copy(K8S / "dockercoins.yaml", path / "templates")
        out = h.Chart.load(str(path)).render({}, name="helmcoins", namespace="helmcoins")
        objs = [o for p in sorted(out) if p.endswith(".yaml") for o in kt.documents(out[p])]
        objs, problems = in_namespace(objs, "helmcoins")
        lesson("helm-create-basic-chart", "helm create + k8s/dockercoins.yaml", objs, extra=problems,
               replayed="helm install helmcoins dockercoins --namespace=helmcoins")

    # helm-create-better-chart: one generic chart (helm create helmcoins), one release per component, the
    # Service named after the release (the lesson's edit), our probes in each values file, redis on 6379.
    with tempfile.TemporaryDirectory() as tmp:
        h.Chart.create("helmcoins", tmp)
        path = Path(tmp, "helmcoins")
        svc = path / "templates" / "service.yaml"
        svc.write_text(re.sub(r'(?m)^(  name: )\{\{ include "helmcoins.fullname" \. \}\}', r"\1{{ .Release.Name }}",
                              svc.read_text(), count=1))
        objs = []
        for component in ("hasher", "redis", "rng", "webui", "worker"):
            values = {"image": {"repository": f"localhost/dockercoins/{component}", "tag": "v0.1"},
                      "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                      "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}}}
            if component == "redis":
                values = {"image": {"repository": "redis", "tag": "7"}, "service": {"port": 6379},
                          "livenessProbe": {"tcpSocket": {"port": "http"}}, "readinessProbe": {"tcpSocket": {"port": "http"}}}
            out = h.Chart.load(str(path)).render(values, name=component, namespace="helmcoins")
            objs += [o for p in sorted(out) if p.endswith(".yaml") and "/tests/" not in p for o in kt.documents(out[p])]
        objs, problems = in_namespace(objs, "helmcoins")
        lesson("helm-create-better-chart", "helm create helmcoins, 5 releases", objs, extra=problems,
               replayed="Service name {{ .Release.Name }}, probes /healthz and /readyz, redis service.port 6379")

    # helm-dependencies: an umbrella chart, Redis from a Redis chart (the lesson's condition
    # redis.enabled, fullnameOverride: redis, so its Service is redis-master), ours told where it is.
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp, "helmcoins")
        (top / "charts").mkdir(parents=True)
        shutil.copytree(CHART, top / "charts" / "dockercoins")
        redis = top / "charts" / "redis"
        (redis / "templates").mkdir(parents=True)
        # A stand-in with the Service and pod labels of Bitnami's chart (which cannot be fetched here).
        (redis / "Chart.yaml").write_text("apiVersion: v2\nname: redis\nversion: 0.0.1\n")
        (redis / "values.yaml").write_text("fullnameOverride: \"\"\narchitecture: replication\nauth:\n  enabled: true\n"
                                           "sentinel:\n  enabled: false\n")
        (redis / "templates" / "master.yaml").write_text(
            "{{- if not .Values.sentinel.enabled -}}\n"
            "{{- $name := .Values.fullnameOverride | default (printf \"%s-redis\" .Release.Name) -}}\n"
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {{ $name }}-master\nspec:\n"
            "  serviceName: {{ $name }}-headless\n  selector:\n    matchLabels: {app.kubernetes.io/name: redis, "
            "app.kubernetes.io/component: master}\n  template:\n    metadata:\n      labels: {app.kubernetes.io/name: redis, "
            "app.kubernetes.io/component: master}\n    spec:\n      containers:\n        - name: redis\n"
            "          image: redis:7\n          ports: [{name: redis, containerPort: 6379}]\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ $name }}-master\nspec:\n  selector: "
            "{app.kubernetes.io/name: redis, app.kubernetes.io/component: master}\n  ports:\n"
            "    - {name: tcp-redis, port: 6379, targetPort: redis}\n{{- end }}\n")
        # With sentinel.enabled (architecture: replication): the StatefulSet <name>-node, each pod a
        # Redis and a Sentinel, and the Service <name> with both ports, as Bitnami's chart makes them.
        (redis / "templates" / "node.yaml").write_text(
            "{{- if .Values.sentinel.enabled -}}\n"
            "{{- $name := .Values.fullnameOverride | default (printf \"%s-redis\" .Release.Name) -}}\n"
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {{ $name }}-node\nspec:\n"
            "  replicas: 3\n  serviceName: {{ $name }}-headless\n  selector:\n    matchLabels: {app.kubernetes.io/name: redis, "
            "app.kubernetes.io/component: node}\n  template:\n    metadata:\n      labels: {app.kubernetes.io/name: redis, "
            "app.kubernetes.io/component: node}\n    spec:\n      containers:\n        - name: redis\n"
            "          image: redis:7\n          ports: [{name: redis, containerPort: 6379}]\n"
            "        - name: sentinel\n          image: redis:7\n          args: [redis-server, /opt/sentinel.conf, --sentinel]\n"
            "          ports: [{name: redis-sentinel, containerPort: 26379}]\n"
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ $name }}\nspec:\n  selector: "
            "{app.kubernetes.io/name: redis, app.kubernetes.io/component: node}\n  ports:\n"
            "    - {name: tcp-redis, port: 6379, targetPort: redis}\n"
            "    - {name: tcp-sentinel, port: 26379, targetPort: redis-sentinel}\n"
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ $name }}-headless\nspec:\n  clusterIP: None\n"
            "  publishNotReadyAddresses: true\n  selector: {app.kubernetes.io/name: redis, app.kubernetes.io/component: node}\n"
            "  ports:\n    - {name: tcp-redis, port: 6379, targetPort: redis}\n"
            "    - {name: tcp-sentinel, port: 26379, targetPort: redis-sentinel}\n{{- end }}\n")
        (top / "Chart.yaml").write_text(
            "apiVersion: v2\nname: helmcoins\nversion: 0.1.0\ndependencies:\n"
            "  - name: dockercoins\n    version: '*'\n"
            "  - name: redis\n    version: '*'\n    condition: redis.enabled\n")
        values_text = ("redis:\n  enabled: true\n  fullnameOverride: redis\n  architecture: standalone\n"
                       "  auth:\n    enabled: false\n"
                       "dockercoins:\n  redis:\n    enabled: false\n    url: redis://redis-master:6379\n")
        (top / "values.yaml").write_text(values_text)
        documented = DOCS.read_text()
        try:
            out = h.Chart.load(str(top)).render({}, name="helmcoins", namespace="default")
            objs = [o for p in sorted(out) if p.endswith(".yaml") for o in kt.documents(out[p])]
        except Exception as err:  # noqa: BLE001  Helm's message is the finding
            objs = []
            kt.check(False, "helm-dependencies: render of the umbrella chart", str(err)[-400:])
        ours = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "redis"]
        extra = [f"the chart's own Redis is still there ({len(ours)} Deployment)"] if ours else []
        if "url: redis://redis-master:6379" not in documented or "condition: redis.enabled" not in documented:
            extra.append("docs/kubernetes.md does not show these steps")
        lesson("helm-dependencies", "umbrella chart: ours + a Redis chart", objs, extra=extra,
               replayed="condition redis.enabled, fullnameOverride: redis, dockercoins.redis.url -> redis-master")

        # The same with Bitnami's Redis in its highly available mode: replication and Sentinel.
        ha_values = ("redis:\n  enabled: true\n  fullnameOverride: redis\n  architecture: replication\n"
                     "  auth:\n    enabled: false\n  sentinel:\n    enabled: true\n"
                     f"dockercoins:\n  redis:\n    enabled: false\n    sentinel:\n      addresses: [{SENTINELS}]\n")
        (top / "values.yaml").write_text(ha_values)
        try:
            out = h.Chart.load(str(top)).render({}, name="helmcoins", namespace="default")
            objs = [o for p in sorted(out) if p.endswith(".yaml") for o in kt.documents(out[p])]
        except Exception as err:  # noqa: BLE001
            objs = []
            kt.check(False, "helm-dependencies: render of the umbrella chart with Sentinel", str(err)[-400:])
        extra = []
        if any(o["kind"] == "Deployment" and o["metadata"]["name"] == "redis" for o in objs):
            extra.append("the chart's own Redis is still there")
        sentinels = {o["metadata"]["name"]: {e["name"]: e.get("value") for e in kt.pod_spec(o)["containers"][0].get("env", [])
                                             }.get("REDIS_SENTINELS") for o in objs
                     if o["kind"] == "Deployment" and o["metadata"]["name"] in ("worker", "webui")}
        joined = SENTINELS.replace(" ", "")
        if sentinels != {"worker": joined, "webui": joined}:
            extra.append(f"REDIS_SENTINELS {sentinels}")
        if f"addresses: [{SENTINELS}]" not in documented or "sentinel:\n    enabled: true" not in documented:
            extra.append("docs/kubernetes.md does not show the Sentinel values")
        lesson("helm-dependencies", "umbrella chart: ours + a Redis chart with Sentinel", objs, extra=extra,
               replayed="architecture: replication, sentinel.enabled, dockercoins.redis.sentinel.addresses -> "
                        "each Sentinel's pod under Service redis-headless, port 26379")


def netpol_lessons(created: list[dict], manifests: list[dict]) -> None:
    policy = manifest("networkpolicy.yaml")
    app_traffic = [
        ("worker -> rng", client("default", {"app": "worker"}), "rng", 80),
        ("worker -> hasher", client("default", {"app": "worker"}), "hasher", 80),
        ("worker -> redis", client("default", {"app": "worker"}), "redis", 6379),
        ("webui -> redis", client("default", {"app": "webui"}), "redis", 6379),
        ("a browser outside -> webui", client(None), "webui", 80),
        ("a debug pod (kubectl run myshell) -> rng", client("default", {"run": "myshell"}), "rng", 80),
        ("httplat (hpa-v2) -> rng", client("default", {"app": "httplat"}), "rng", 80),
    ]
    refused = [
        ("a pod of another namespace -> rng", client("other", {"run": "x"}), "rng", 80),
        ("a pod of another namespace -> redis", client("other", {"run": "x"}), "redis", 6379),
        ("a browser outside -> hasher", client(None), "hasher", 80),
        ("Prometheus (namespace prometheus) -> worker, no metricsFrom", client("prometheus", {"app": "prometheus"}), "worker", 80),
    ]
    for route, objs in (("kubectl create", created), ("k8s/dockercoins.yaml", manifests)):
        with_policy = objs + policy
        flows = [(w, c, a, p if a == "redis" else _port(objs, a)) for w, c, a, p in app_traffic]
        problems = traffic_problems(with_policy, flows, refused)
        unselected = [p["name"] for p in pods(with_policy)
                      if not any(label_match(o["spec"]["podSelector"], p["labels"]) for o in policy)]
        if unselected:
            problems.append(f"pods no policy selects (open to every namespace): {', '.join(unselected)}")
        lesson("netpol", f"{route} + k8s/networkpolicy.yaml", with_policy, extra=problems,
               replayed=f"{len(app_traffic)} flows admitted, {len(refused)} refused")
    values = yaml.safe_load((CHART / "ci" / "networkpolicy-values.yaml").read_text())
    objs = chart(values)
    port = _port(objs, "worker")
    prom = [("Prometheus (namespace monitoring, metricsFrom) -> worker metrics",
             client("monitoring", {"app": "prometheus"}), "worker", port)]
    problems = traffic_problems(objs, prom, [("Prometheus (namespace monitoring) -> redis", client("monitoring"), "redis", 6379)])
    lesson("netpol", "helm -f ci/networkpolicy-values.yaml", objs, extra=problems,
           replayed="Prometheus of metricsFrom admitted on the metrics port only")


def _port(objs: list[dict], app: str) -> int:
    for o in objs:
        spec = kt.pod_spec(o)
        if spec and o["spec"]["template"]["metadata"]["labels"].get("app") == app:
            return listening_port(spec["containers"][0]) or 80
    return 80


def namespaces_and_prometheus(manifests: list[dict]) -> None:
    # namespaces: the app twice, kubectl apply -n blue and helm install -n green; each finds its own Services.
    blue, problems = in_namespace(manifests, "blue")
    green = chart({}, namespace="green")
    green, more = in_namespace(green, "green")
    lesson("namespaces", "apply -n blue + helm install -n green", blue + green, extra=problems + more)

    # hpa-v2: k8s/dockercoins.yaml in customscaling, 10 workers, httplat on rng, the lesson's HPA on deploy/rng.
    objs = replace(manifests, scale(get(manifests, "Deployment", "worker"), 10))
    httplat = create_deployment("httplat", "jpetazzo/httplat", "httplat", "http://rng/")
    svc = expose(httplat, 9080)
    svc["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "9080",
                                      "prometheus.io/path": "/metrics"}
    hpa = {"kind": "HorizontalPodAutoscaler", "apiVersion": "autoscaling/v2", "metadata": {"name": "rng"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rng"},
                    "minReplicas": 1, "maxReplicas": 20,
                    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 60},
                                 "scaleDown": {"stabilizationWindowSeconds": 180}},
                    "metrics": [{"type": "Object", "object": {
                        "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "httplat"},
                        "metric": {"name": "httplat_latency_seconds"}, "target": {"type": "Value", "value": "0.1"}}}]}}
    objs, problems = in_namespace(objs + [httplat, svc, hpa] + manifest("networkpolicy.yaml"), "customscaling")
    problems += traffic_problems(objs, [("httplat -> rng", client("customscaling", {"app": "httplat"}), "rng",
                                         _port(objs, "rng"))], [])
    rng = get(objs, "Deployment", "rng")
    if rng["spec"].get("replicas") not in (None, 1):
        problems.append("rng's replicas fixed by the manifest would fight the HPA")
    lesson("hpa-v2", "k8s/dockercoins.yaml -n customscaling + httplat + HPA", objs,
           images_allowed=("jpetazzo/httplat",), extra=problems,
           replayed="create deployment httplat, expose 9080, annotate, HPA on deploy/rng")

    # prometheus: the community chart's pod scrape (prometheus.io/* annotations) hits the metrics port.
    objs = chart({})
    scraped = [o["metadata"]["name"] for o in objs if kt.pod_spec(o)
               and o["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"]
    lesson("prometheus", "helm install (pod annotations)", objs,
           extra=[] if sorted(scraped) == ["hasher", "rng", "webui", "worker"] else [f"scraped: {scraped}"],
           replayed="prometheus.io/port is the port each pod listens on")


def redis_checks() -> None:
    """Redis on a cluster: readiness that cannot cascade, bounded memory, upgrade without restart,
    the default storage class, a claim that helm uninstall keeps."""
    def redis_of(objs):
        return get(objs, "Deployment", "redis")

    c = kt.pod_spec(redis_of(chart({})))["containers"][0]
    ready = c.get("readinessProbe", {})
    cascade_free = "tcpSocket" in ready or (
        "exec" in ready and ready["exec"]["command"][0] == "redis-cli" and ready.get("timeoutSeconds", 1) >= 5
        and ready.get("failureThreshold", 3) >= 3)
    kt.check(cascade_free, f"redis readiness cannot time out on a busy node (tcpSocket, or redis-cli with a long "
             f"timeout): {json.dumps(ready)}")

    units = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    args = c.get("args", [])
    maxmemory = args[args.index("--maxmemory") + 1] if "--maxmemory" in args else None
    policy = args[args.index("--maxmemory-policy") + 1] if "--maxmemory-policy" in args else None
    limit = c["resources"]["limits"]["memory"]
    lm = re.match(r"^(\d+)(Ki|Mi|Gi)$", limit)
    mm = re.match(r"^(\d+)(b|kb|mb|gb)$", maxmemory or "")
    ratio = (int(mm.group(1)) * units[mm.group(2)]) / (int(lm.group(1)) * units[lm.group(2)]) if lm and mm else 0
    kt.check(policy == "noeviction" and 0 < ratio <= 0.5 and lm and int(lm.group(1)) * units[lm.group(2)] >= 512 * 1024**2,
             f"redis: --maxmemory {maxmemory} --maxmemory-policy {policy}, {ratio:.0%} of its {limit} limit "
             "(RSS about 1.2x the data, and the append-only file's rewrite forks), a limit of at least 512Mi")

    # helm upgrade to a new chart version, appVersion and image tag: Redis' pod template unchanged.
    with tempfile.TemporaryDirectory() as tmp:
        copy_ = Path(tmp, "dockercoins")
        shutil.copytree(CHART, copy_)
        meta = yaml.safe_load((copy_ / "Chart.yaml").read_text())
        meta["version"], meta["appVersion"] = "9.9.9", "v9.9"
        (copy_ / "Chart.yaml").write_text(yaml.safe_dump(meta))
        out = kt.helm().Chart.load(str(copy_)).render({"image": {"tag": "v0.2"}}, name="dockercoins", namespace="default")
        newer = [o for p in sorted(out) if p.endswith(".yaml") for o in kt.documents(out[p])]
    before, after = redis_of(chart({}))["spec"]["template"], redis_of(newer)["spec"]["template"]
    kt.check(before == after, "helm upgrade to chart 9.9.9, appVersion v9.9, image.tag v0.2: Redis' pod template "
             "unchanged (no restart, no emptied counter)", f"{before['metadata']} != {after['metadata']}")

    pvc = next(o for o in chart({"redis": {"persistence": {"enabled": True}}}) if o["kind"] == "PersistentVolumeClaim")
    kt.check("storageClassName" not in pvc["spec"]
             and pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
             "redis persistence: the cluster's default StorageClass, the claim kept by helm uninstall "
             "(helm.sh/resource-policy: keep)", json.dumps(pvc["metadata"]) + json.dumps(pvc["spec"]))
    ci = yaml.safe_load((CHART / "ci" / "persistence-values.yaml").read_text())
    pinned = ci.get("redis", {}).get("persistence", {}).get("storageClassName")
    kt.check(not pinned, f"ci/persistence-values.yaml names no StorageClass (k3s, EKS have no 'standard'): {pinned!r}")

    # An external Redis: redis.enabled false + redis.url.
    objs = chart({"redis": {"enabled": False, "url": "redis://redis-master.db:6379"}})
    urls = {o["metadata"]["name"]: next((e["value"] for e in kt.pod_spec(o)["containers"][0].get("env", [])
                                         if e["name"] == "REDIS_URL"), None)
            for o in objs if kt.pod_spec(o) and o["metadata"]["name"] in ("worker", "webui")}
    kt.check(not any(o["metadata"]["name"] == "redis" for o in objs)
             and set(urls.values()) == {"redis://redis-master.db:6379"},
             f"redis.enabled=false, redis.url=redis://redis-master.db:6379: no Redis objects, REDIS_URL {urls}")
    try:
        chart({"redis": {"enabled": False}})
        kt.check(False, "schema refuses redis.enabled=false without redis.url", "accepted")
    except Exception as err:  # noqa: BLE001
        kt.check("/redis/url" in str(err), "schema refuses redis.enabled=false without redis.url: "
                 + str(err).strip().splitlines()[-1], str(err))


# --- Under Docker: the DaemonSet route -----------------------------------------------------


def cmd_run() -> None:
    import k8s_chapters

    k8s_chapters.run(sys.modules[__name__])  # shipping images: registry:2, scripts/push.sh, pull
    daemonset_run()


def daemonset_run() -> None:
    """rng Deployment + DaemonSet (from kubectl) behind k8s/dockercoins.yaml's Service rng, 10 workers;
    hasher and webui as `kubectl create deployment` + `kubectl expose` make them (the first route)."""
    created = {(o["kind"], o["metadata"]["name"]): o for o in app_by_kubectl_create()}
    objects = [created.get((o["kind"], o["metadata"]["name"]), o) if o["metadata"]["name"] in ("hasher", "webui") else o
               for o in manifest("dockercoins.yaml")]
    ds, _ = daemonset_from_kubectl()
    services = [o for o in objects if o["kind"] == "Service"]
    network = f"{kt.PREFIX}-net"
    kt.cleanup()
    kt.docker("network", "create", "--label", kt.LABEL, network)
    started: dict[str, tuple[dict, str]] = {}
    try:
        order = ["redis", "hasher", "rng", "webui"]
        workloads = sorted([o for o in objects if kt.pod_spec(o) and o["metadata"]["name"] != "worker"],
                           key=lambda o: order.index(o["metadata"]["name"]))
        pods_ = [(w, f"{kt.PREFIX}-{w['metadata']['name']}-0") for w in workloads]
        pods_ += [(ds, f"{kt.PREFIX}-rng-ds{i}") for i in range(NODES)]
        worker = get(objects, "Deployment", "worker")
        pods_ += [(worker, f"{kt.PREFIX}-worker-{i}") for i in range(10)]
        in_service = []
        for w, name in pods_:
            labels = w["spec"]["template"]["metadata"]["labels"]
            pod = {"name": name, "namespace": "default", "labels": labels, "spec": kt.pod_spec(w), "owner": w}
            # A pod is an endpoint of a Service only if the targetPort is the port it listens on.
            aliases = [s["metadata"]["name"] for s in services if selected(s["spec"]["selector"], pod)
                       and not endpoints(s, [pod])[1]]
            kt.docker(*kt.run_args(w, aliases, name, network))
            c = kt.pod_spec(w)["containers"][0]
            pid = kt.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
            for s in services:  # kube-proxy: the Service's port to the pod's targetPort
                if s["metadata"]["name"] not in aliases:
                    continue
                for p in s["spec"]["ports"]:
                    target = resolve(p.get("targetPort", p["port"]), c)
                    if target != p["port"]:
                        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
                                        "--dport", str(p["port"]), "-j", "REDIRECT", "--to-ports", str(target)], check=True)
            started[name] = (w, kt.container_ip(name, network))
            if "rng" in aliases:
                in_service.append(name)
        print(f"    rng pods behind Service rng: {', '.join(in_service)}", flush=True)
        redis_name = f"{kt.PREFIX}-redis-0"
        deadline = time.time() + 30
        while kt.redis_hashes(redis_name) == 0 and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        h1, t1 = kt.redis_hashes(redis_name), time.time()
        time.sleep(12)
        h2, t2 = kt.redis_hashes(redis_name), time.time()
        rate = (h2 - h1) / (t2 - t1)
        served = {}
        for name in [n for n in started if "-rng-" in n]:
            w, ip = started[name]
            port = listening_port(kt.pod_spec(w)["containers"][0])
            try:
                with kt.NO_PROXY.open(f"http://{ip}:{port}/metrics", timeout=3) as response:
                    text = response.read().decode()
                # The requests answered, probes and scrapes left out.
                served[name] = sum(int(float(m.group(2))) for m in re.finditer(
                    r'^http_requests_total\{(.*)\} (\S+)$', text, re.MULTILINE)
                    if not re.search(r'route="/(metrics|healthz|readyz)"', m.group(1)))
            except OSError as err:
                served[name] = -1
                print(f"    {name}: /metrics {err}", flush=True)
        ds_pods = [n for n in served if "-rng-ds" in n]
        kt.check(len(in_service) == NODES + 1 and all(n in in_service and served[n] > 0 for n in ds_pods),
                 f"DaemonSet route: the {NODES} DaemonSet pods and the Deployment's are endpoints of Service rng "
                 f"(targetPort resolves on pods with no named port)", str(in_service))
        log(f"requests served per rng pod (from /metrics): {served}")
        kt.check(rate > 11.0, f"DaemonSet route: 10 workers mine {rate:.2f} hashes/s over {t2 - t1:.1f} s with "
                 f"{len(in_service)} rng pods in the Service (one rng alone: at most 10)")
        LESSONS.append(("daemonset", "under Docker", "ok" if rate > 11.0 else "FAIL"))
        w, ip = started[f"{kt.PREFIX}-webui-0"]
        try:
            port = listening_port(kt.pod_spec(w)["containers"][0])
            with kt.NO_PROXY.open(f"http://{ip}:{port}/json", timeout=3) as response:
                body = json.loads(response.read())
            kt.check(body.get("hashes", 0) >= h2, f"webui from kubectl create deployment: /json on port {port} "
                     f"shows {body.get('hashes')} hashes (hasher too came from kubectl create + expose)")
        except (OSError, ValueError) as err:
            kt.check(False, "webui from kubectl create deployment: /json", str(err))
    finally:
        kt.cleanup()


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("static", "run", "all"):
        print(f"usage: {sys.argv[0]} static|run|all", file=sys.stderr)
        return 2
    started = time.time()
    try:
        if sys.argv[1] in ("static", "all"):
            cmd_static()
        if sys.argv[1] in ("run", "all"):
            cmd_run()
    except Exception as err:  # noqa: BLE001  an unexpected error is a failure with its message, then the counts
        import traceback

        traceback.print_exc()
        kt.fail(f"k8s_lessons.py {sys.argv[1]}: {type(err).__name__}: {err}")
    if LESSONS:
        log("lesson | route | result")
        for row in LESSONS:
            print(f"    {' | '.join(row)}", flush=True)
    log(f"{sys.argv[1]} done in {time.time() - started:.0f} s")
    return kt.checks.summary()


if __name__ == "__main__":
    sys.exit(main())
