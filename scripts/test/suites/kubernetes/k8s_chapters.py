"""More container.training Kubernetes chapters replayed with our files, without a cluster.

Called by scripts/test/suites/kubernetes/k8s_lessons.py (static: `static(lessons)`, run: `run(lessons)`), which passes
itself as `lessons` (its kubectl, lesson, get ... helpers). docs/kubernetes.md, "More chapters,
replayed", says what each replays and what it cannot.

  record          kubectl set image / annotate kubernetes.io/change-cause with --local; whether
                  kubectl still has --record; `kubectl rollout history` computed from the Deployment
                  controller's rule for the docs' command sequence, against the docs' expected output
  accessinternal  the webui Service has one port (so .../services/webui/proxy/ needs no port name) and
                  Service redis sends 6379 to Redis's 6379 (kubectl port-forward svc/redis 10000:6379);
                  the page behind a path-prefixing proxy is the browser suite's (webui_browser.py)
  kustomize       the lab on a local copy of k8s/ as its base: `kustomize create --resources`, the
                  lesson's images:, PrefixSuffixTransformer and replacements as written and as adapted
                  to our image names, the rendered images and object names asserted
  registry        kubectl create deployment registry + expose --type=NodePort (dry run, validated);
                  run: a registry:2 container on a node-port-range port, scripts/push.sh to it,
                  /v2/_catalog, a pull back, and the images the chart and Kustomize then name
  selfpaced       the Tiltfile (executed with Tilt's functions stubbed), k8s/ as the kustomization
                  Flux and Argo CD point at (renders exactly k8s/dockercoins.yaml), the Dockerfiles'
                  BuildKit features Kaniko lacks
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import kubernetes as kt
import yaml

ROOT = kt.ROOT
K8S = kt.K8S
SERVICES = ("hasher", "rng", "webui", "worker")
CHANGE_CAUSE = "kubernetes.io/change-cause"

# --- record --------------------------------------------------------------------------------

# The docs' sequence for the record chapter (docs/kubernetes.md, "Recording the change cause"),
# each step: (command as shown, kind of change, image or None, change cause set on the Deployment or None).
RECORD_STEPS = [
    ("kubectl apply -f k8s/dockercoins.yaml", "template", "localhost/dockercoins/worker:v0.1", None),
    ("kubectl set image deployment worker worker=localhost/dockercoins/worker:v0.2", "template",
     "localhost/dockercoins/worker:v0.2", None),
    ('kubectl annotate deployment worker kubernetes.io/change-cause="worker v0.2: one unit a second"', "meta",
     None, "worker v0.2: one unit a second"),
    ("kubectl set image deployment worker worker=localhost/dockercoins/worker:v0.1", "template",
     "localhost/dockercoins/worker:v0.1", None),
    ("kubectl scale deployment worker --replicas=3", "meta", None, None),
    ('kubectl annotate deployment worker kubernetes.io/change-cause="back to v0.1, 3 workers" --overwrite',
     "meta", None, "back to v0.1, 3 workers"),
]
# What `kubectl rollout history deployment worker` shows after the steps, as the docs show it.
RECORD_HISTORY = [
    ("2", "worker v0.2: one unit a second"),
    ("3", "back to v0.1, 3 workers"),
]
# After step 3 (set image v0.2, then annotate).
RECORD_ANNOTATED = [
    ("1", "<none>"),
    ("2", "worker v0.2: one unit a second"),
]
# And after step 4 (set image back to v0.1, no annotate yet): the pitfall of the lesson.
RECORD_PITFALL = [
    ("2", "worker v0.2: one unit a second"),
    ("3", "worker v0.2: one unit a second"),
]


def rollout_history(steps) -> list[list[tuple[str, str]]]:
    """`kubectl rollout history` after each step, by the Deployment controller's rule: a change of the
    pod template makes a new ReplicaSet, or takes back the old one with the same template, with the
    next revision; the Deployment's annotations (kubernetes.io/change-cause among them) are copied to
    its current ReplicaSet on every sync, template change or not. kubectl lists revisions in order,
    CHANGE-CAUSE <none> where the ReplicaSet has none."""
    sets: list[dict] = []  # {"image", "revision", "cause"}
    cause = None
    current = None
    out = []
    for _, kind, image, new_cause in steps:
        if new_cause is not None:
            cause = new_cause
        if kind == "template" and (current is None or current["image"] != image):
            revision = max((s["revision"] for s in sets), default=0) + 1
            same = next((s for s in sets if s["image"] == image), None)
            current = same or {"image": image}
            current["revision"] = revision
            if not same:
                sets.append(current)
        if current is not None and cause is not None:
            current["cause"] = cause
        out.append([(str(s["revision"]), s.get("cause") or "<none>") for s in sorted(sets, key=lambda s: s["revision"])])
    return out


def record(L) -> None:
    manifests = L.manifest("dockercoins.yaml")
    worker = L.get(manifests, "Deployment", "worker")
    # --record: gone from kubectl, or a deprecated flag that still writes the annotation?
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(worker, f)
        f.flush()
        proc = subprocess.run([str(L.KUBECTL), "set", "image", "-f", f.name, "--local", "-o", "yaml", "--record",
                               "worker=localhost/dockercoins/worker:v0.2"], check=False, capture_output=True, text=True)
    recorded = None
    if proc.returncode == 0:
        (out,) = kt.documents(proc.stdout)
        recorded = out["metadata"].get("annotations", {}).get(CHANGE_CAUSE)
    warning = (proc.stderr.strip().splitlines() or [""])[0]
    kt.log(f"record: kubectl set image --record: exit {proc.returncode}, {warning!r}, change-cause {recorded!r}")
    docs = L.DOCS.read_text()
    if proc.returncode == 0:
        said = "--record` is deprecated" in docs and "still writes" in docs
        kt.check(said and recorded is not None and "deprecated" in proc.stderr,
                 f"record: kubectl {kubectl_version(L)} still accepts --record, with a deprecation warning, and "
                 f"writes {CHANGE_CAUSE} (the docs say so)", f"{warning!r}, {recorded!r}")
    else:
        kt.check("unknown flag: --record" in proc.stderr and "unknown flag: --record" in docs,
                 f"record: kubectl {kubectl_version(L)} refuses --record, as the docs show", warning)
    # The replacement: kubectl annotate, which works on every kubectl (here with --local).
    annotated = L.kubectl_on(worker, "annotate", f'{CHANGE_CAUSE}=worker v0.2: one unit a second')
    moved = L.kubectl_on(worker, "set", "image", "worker=localhost/dockercoins/worker:v0.2")
    image = kt.pod_spec(moved)["containers"][0]["image"]
    kt.check(annotated["metadata"]["annotations"].get(CHANGE_CAUSE) == "worker v0.2: one unit a second"
             and image == "localhost/dockercoins/worker:v0.2",
             "record: kubectl annotate --local sets kubernetes.io/change-cause, set image --local the worker's image")
    overwritten = L.kubectl_on(annotated, "annotate", "--overwrite", f"{CHANGE_CAUSE}=back to v0.1, 3 workers")
    kt.check(overwritten["metadata"]["annotations"][CHANGE_CAUSE] == "back to v0.1, 3 workers",
             "record: kubectl annotate --overwrite --local replaces the change cause (the docs' last annotate)")
    history = rollout_history(RECORD_STEPS)
    kt.check(history[-1] == RECORD_HISTORY and history[3] == RECORD_PITFALL and history[2] == RECORD_ANNOTATED,
             "record: rollout history by the controller's rule is the docs' (pitfall after the second set image, "
             "then the annotation on revision 3)", f"{history}")
    for expected in (RECORD_ANNOTATED, RECORD_PITFALL, RECORD_HISTORY):
        table = "\n".join(f"{rev:<10}{cause}" for rev, cause in expected)
        kt.check(table in docs, "record: docs/kubernetes.md shows that history", table)
    L.LESSONS.append(("record", "set image, annotate change-cause (--local); history by rule", "ok"))


def kubectl_version(L) -> str:
    proc = subprocess.run([str(L.KUBECTL), "version", "--client", "-o", "json"], check=False, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError):
        return "?"


# --- accessinternal -------------------------------------------------------------------------


def accessinternal(L) -> None:
    for route, objs in (("kubectl create", L.app_by_kubectl_create()), ("k8s/dockercoins.yaml", L.manifest("dockercoins.yaml")),
                        ("helm", L.chart())):
        webui = L.get(objs, "Service", "webui")
        ports = webui["spec"]["ports"]
        good, _ = L.endpoints(webui, L.pods(objs))
        kt.check(len(ports) == 1 and bool(good),
                 f"accessinternal ({route}): Service webui has one port, so "
                 "/api/v1/namespaces/default/services/webui/proxy/ reaches it without a port name",
                 f"{len(ports)} ports, {len(good)} endpoints")
        redis = L.get(objs, "Service", "redis")
        port = next((p for p in redis["spec"]["ports"] if p["port"] == 6379), None)
        pod = next(p for p in L.pods(objs) if p["labels"].get("app") == "redis")
        listens = any(c.get("containerPort") == 6379 for c in pod["spec"]["containers"][0].get("ports", [])) \
            or pod["spec"]["containers"][0]["image"].startswith("redis")
        kt.check(port is not None and port.get("targetPort", 6379) == 6379 and listens,
                 f"accessinternal ({route}): kubectl port-forward svc/redis 10000:6379 reaches Redis's 6379")
    L.LESSONS.append(("accessinternal", "Service ports for kubectl proxy / port-forward", "ok"))


# --- kustomize --------------------------------------------------------------------------------

LESSON_IMAGES = "".join(f"- name: dockercoins/{s}\n  newName: ghcr.io/dockercoins/{s}\n" for s in SERVICES)
OUR_IMAGES = "".join(f"- name: localhost/dockercoins/{s}\n  newName: 127.0.0.1:5000/{s}\n" for s in SERVICES)
PREFIX_TRANSFORMER = """transformers:
- |
  apiVersion: builtin
  kind: PrefixSuffixTransformer
  metadata:
    name: use-ghcr-io
  prefix: ghcr.io/
  fieldSpecs:
  - path: spec/template/spec/containers/image
"""


def replacements(source: str) -> str:
    return f"""replacements:
- sourceValue: {source}
  targets:
  - select:
      kind: Deployment
      labelSelector: "app in (hasher,rng,webui,worker)"
    fieldPaths:
    - spec.template.spec.containers.*.image
    options:
      delimiter: "/"
      index: 0
"""


# (what the chapter does, the kustomization written in kustomcoins/, image of each Deployment expected)
KUSTOMIZE_STEPS = [
    ("kustomize create --resources ../base", "",
     {**{s: f"localhost/dockercoins/{s}:v0.1" for s in SERVICES}, "redis": "redis:7"}),
    ("the lesson's images: (dockercoins/<s> -> ghcr.io/dockercoins/<s>)", "images:\n" + LESSON_IMAGES,
     {**{s: f"localhost/dockercoins/{s}:v0.1" for s in SERVICES}, "redis": "redis:7"}),
    ("images: with our names (localhost/dockercoins/<s> -> 127.0.0.1:5000/<s>, push.sh's)", "images:\n" + OUR_IMAGES,
     {**{s: f"127.0.0.1:5000/{s}:v0.1" for s in SERVICES}, "redis": "redis:7"}),
    ("kustomize edit set image localhost/dockercoins/worker=:v0.2",
     "images:\n- name: localhost/dockercoins/worker\n  newTag: v0.2\n",
     {**{s: f"localhost/dockercoins/{s}:v0.1" for s in SERVICES}, "worker": "localhost/dockercoins/worker:v0.2",
      "redis": "redis:7"}),
    ("the lesson's PrefixSuffixTransformer (prefix ghcr.io/)", PREFIX_TRANSFORMER,
     {**{s: f"ghcr.io/localhost/dockercoins/{s}:v0.1" for s in SERVICES}, "redis": "ghcr.io/redis:7"}),
    ("the lesson's replacements (sourceValue ghcr.io/dockercoins, index 0)", replacements("ghcr.io/dockercoins"),
     {**{s: f"ghcr.io/dockercoins/dockercoins/{s}:v0.1" for s in SERVICES}, "redis": "redis:7"}),
    ("replacements with our names (sourceValue registry.example:5000, index 0: the registry part)",
     replacements("registry.example:5000"),
     {**{s: f"registry.example:5000/dockercoins/{s}:v0.1" for s in SERVICES}, "redis": "redis:7"}),
]


def kustomize(L) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp, "base")
        shutil.copytree(K8S, base)
        reference = sorted(L.kubectl("kustomize", str(base)), key=key)
        lab = Path(tmp, "kustomcoins")
        lab.mkdir()
        header = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../base\n"
        for what, extra, images in KUSTOMIZE_STEPS:
            (lab / "kustomization.yaml").write_text(header + extra)
            objs = L.kubectl("kustomize", str(lab))
            got = {o["metadata"]["name"]: kt.pod_spec(o)["containers"][0]["image"] for o in objs if kt.pod_spec(o)}
            names = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
            same_names = names == sorted((o["kind"], o["metadata"]["name"]) for o in reference)
            kt.check(got == images and same_names, f"kustomize lab: {what}: images {sorted(set(got.values()))[:2]}..., "
                     f"names unchanged ({len(objs)} objects)", f"{got}, names {names}")
        L.lesson("kustomize", "lab: base k8s/, replacements with our names", objs,
                 images_allowed=tuple(images.values()), replayed="kustomize create, images:, PrefixSuffixTransformer, "
                 "replacements, on a copy of k8s/")


def key(o: dict) -> tuple[str, str]:
    return o["kind"], o["metadata"]["name"]


# --- registry (shipping images) ----------------------------------------------------------------


def registry_objects(L) -> list[dict]:
    """kubectl create deployment registry --image=registry:2; kubectl expose deploy/registry --port=5000
    --type=NodePort (by its rule)."""
    deployment = L.create_deployment("registry", "registry:2")
    return [deployment, L.expose(deployment, 5000, "NodePort")]


def registry_static(L) -> None:
    objs = registry_objects(L)
    errors = L.validate("registry", objs)
    service = objs[1]
    kt.check(not errors and service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["targetPort"] == 5000,
             "shipping images: kubectl create deployment registry --image=registry:2 + expose --port=5000 "
             "--type=NodePort: valid, the Service sends to the registry's 5000", "; ".join(errors))
    # What the app names once the images are in that registry (NODEPORT 31234, say).
    for route, objs in (("helm --set image.registry=127.0.0.1:31234", L.chart({"image": {"registry": "127.0.0.1:31234"}})),):
        images = sorted({c["image"] for o in objs if kt.pod_spec(o) for c in kt.pod_spec(o)["containers"]})
        want = sorted([f"127.0.0.1:31234/{s}:v0.1" for s in SERVICES] + ["redis:7"])
        kt.check(images == want, f"shipping images: {route}: the images push.sh pushes "
                 "(REGISTRY=127.0.0.1:31234 TAG=v0.1 scripts/push.sh)", f"{images}")


def free_node_port() -> int:
    """A free loopback port in the NodePort range (30000-32767), as the registry's would be."""
    for port in range(31700, 32700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 31700-32699")


def registry_run(L) -> None:
    """The chapter's registry, as Docker runs it on a node: registry:2 published on 127.0.0.1:<node port>,
    our images pushed with scripts/push.sh, listed by /v2/_catalog, pulled back."""
    started = time.time()
    port = free_node_port()
    name = f"{kt.PREFIX}-registry"
    registry = f"127.0.0.1:{port}"
    pushed = [f"{registry}/{s}:{kt.TAG}" for s in SERVICES]
    try:
        kt.docker("run", "-d", "--name", name, "--label", kt.LABEL, "-p", f"{registry}:5000", "registry:2")
        for _ in range(50):
            if subprocess.run(["curl", "-fs", "--max-time", "1", f"http://{registry}/v2/"], check=False, capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        empty = subprocess.run(["curl", "-fs", f"http://{registry}/v2/_catalog"], check=False, capture_output=True, text=True).stdout
        push = subprocess.run([str(ROOT / "scripts" / "push.sh")], check=False, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "REGISTRY": registry, "TAG": kt.TAG, "BUILD": "never"})
        catalog = subprocess.run(["curl", "-fs", f"http://{registry}/v2/_catalog"], check=False, capture_output=True, text=True).stdout
        kt.check(push.returncode == 0 and json.loads(empty or "{}") == {"repositories": []}
                 and json.loads(catalog or "{}") == {"repositories": sorted(SERVICES)},
                 f"shipping images: REGISTRY={registry} scripts/push.sh: /v2/_catalog {empty.strip()} then {catalog.strip()}",
                 (push.stderr or push.stdout).strip()[-300:])
        kt.docker("rmi", *pushed, check_rc=False)
        pulled = kt.docker("pull", "-q", pushed[-1], check_rc=False, timeout=120)
        kt.check(pulled.returncode == 0, f"shipping images: a node pulls {pushed[-1]} back", pulled.stderr.strip()[-200:])
    finally:
        kt.docker("rm", "-f", "-v", name, check_rc=False)
        kt.docker("rmi", *pushed, check_rc=False)
    kt.log(f"shipping images under Docker: {time.time() - started:.0f} s")
    L.LESSONS.append(("shipping images", "registry:2 on a node port, scripts/push.sh, pull", "ok"))


# --- selfpaced: Tilt, Flux, Argo CD, Kaniko --------------------------------------------------


class _Os:
    def __init__(self, env: dict):
        self.env = env

    def getenv(self, name, default=None):
        return self.env.get(name, default)


def tiltfile(L, env: dict) -> dict:
    """Executes the Tiltfile (Starlark, run as Python) with Tilt's functions recording their calls."""
    calls: dict = {"docker_build": [], "k8s_yaml": [], "k8s_resource": [], "default_registry": []}

    def kustomize(path, **_):
        return subprocess.run([str(L.KUBECTL), "kustomize", str(ROOT / path)], capture_output=True, text=True,
                              check=True).stdout

    scope = {
        "os": _Os(env),
        "docker_build": lambda ref, context, **kw: calls["docker_build"].append((ref, context, kw)),
        "k8s_yaml": lambda yaml_text, **kw: calls["k8s_yaml"].append(yaml_text),
        "k8s_resource": lambda workload, **kw: calls["k8s_resource"].append((workload, kw)),
        "default_registry": lambda host, **kw: calls["default_registry"].append(host),
        "kustomize": kustomize,
    }
    exec(compile((ROOT / "Tiltfile").read_text(), "Tiltfile", "exec"), scope)  # noqa: S102  our own file
    return calls


def selfpaced(L) -> None:
    manifests = L.manifest("dockercoins.yaml")
    calls = tiltfile(L, {})
    objs = [o for text in calls["k8s_yaml"] for o in kt.documents(text)]
    built = {ref: (context, kw) for ref, context, kw in calls["docker_build"]}
    images = {c["image"].rsplit(":", 1)[0] for o in objs if kt.pod_spec(o) for c in kt.pod_spec(o)["containers"]}
    problems = []
    for ref, (context, kw) in built.items():
        dockerfile = ROOT / kw.get("dockerfile", "Dockerfile")
        if context != "." or not dockerfile.is_file():
            problems.append(f"{ref}: context {context}, dockerfile {dockerfile}")
        elif "COPY . ." not in dockerfile.read_text():
            problems.append(f"{dockerfile.name} no longer copies the repository root")
    ours = {f"localhost/dockercoins/{s}" for s in SERVICES}
    if set(built) != ours or not ours <= images:
        problems.append(f"built {sorted(built)}, the YAML's images {sorted(images)}")
    for workload, kw in calls["k8s_resource"]:
        _local, _, remote = kw.get("port_forwards", ":").partition(":")
        target = next((o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == workload), None)
        listening = target and L.listening_port(kt.pod_spec(target)["containers"][0])
        if listening != int(remote):
            problems.append(f"k8s_resource {workload}: port forward to {remote}, the pod listens on {listening}")
    kt.check(not problems and not calls["default_registry"] and len(calls["k8s_resource"]) == 2,
             f"Tilt: the Tiltfile builds {len(built)} images from docker/*.Dockerfile (context: the repository root), "
             f"deploys {len(objs)} objects of kustomize k8s/, forwards webui 8000:80 and redis 10000:6379", "; ".join(problems))
    with_registry = tiltfile(L, {"DOCKERCOINS_REGISTRY": "127.0.0.1:30555"})
    kt.check(with_registry["default_registry"] == ["127.0.0.1:30555"],
             "Tilt: DOCKERCOINS_REGISTRY=127.0.0.1:30555 tilt up sets Tilt's default_registry",
             f"{with_registry['default_registry']}")

    # Flux (flux create kustomization --path=./k8s) and Argo CD (argocd app create --path k8s) build
    # k8s/kustomization.yaml when there is one, else every manifest of the directory.
    rendered = sorted(L.kubectl("kustomize", str(K8S)), key=key)
    plain = sorted(manifests, key=key)
    kt.check(rendered == plain, f"Flux, Argo CD: kubectl kustomize k8s/ renders exactly the {len(plain)} objects of "
             "kubectl apply -f k8s/dockercoins.yaml", f"{[key(o) for o in rendered]} vs {[key(o) for o in plain]}")
    every_file = [o for f in sorted(K8S.glob("*.yaml")) if f.name != "kustomization.yaml" for o in L.manifest(f.name)]
    rng_kinds = sorted(o["kind"] for o in every_file if o["metadata"]["name"] == "rng" and kt.pod_spec(o))
    kt.check(rng_kinds == ["DaemonSet", "Deployment"],
             "Flux, Argo CD: without k8s/kustomization.yaml they would apply every file of k8s/: rng as both "
             "a Deployment and a DaemonSet (and the NetworkPolicy)", f"{rng_kinds}")

    # Kaniko: what in our Dockerfiles a builder without BuildKit's features meets.
    for service in SERVICES:
        text = (ROOT / "docker" / f"{service}.Dockerfile").read_text()
        mounts = len(re.findall(r"--mount=type=cache", text))
        docs = L.DOCS.read_text()
        kt.check(mounts >= 1 and "FROM --platform=$BUILDPLATFORM" in text and "FF_KANIKO_RUN_MOUNT_CACHE" in docs,
                 f"Kaniko: docker/{service}.Dockerfile uses RUN --mount=type=cache ({mounts}) and "
                 "FROM --platform=$BUILDPLATFORM, as docs/kubernetes.md says")
    L.LESSONS.append(("tilt, flux, argocd", "Tiltfile executed; kustomize k8s/ = dockercoins.yaml", "ok"))


def static(L) -> None:
    started = time.time()
    record(L)
    accessinternal(L)
    kustomize(L)
    registry_static(L)
    selfpaced(L)
    kt.log(f"record, accessinternal, kustomize lab, shipping images, Tilt/Flux/Argo CD/Kaniko: {time.time() - started:.1f} s")


def run(L) -> None:
    registry_run(L)
