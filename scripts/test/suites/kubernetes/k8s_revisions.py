#!/usr/bin/env python3
"""Revisions of a release, as a cluster would see them, without a cluster.

Run by scripts/test/suites/kubernetes/kubernetes.sh (in the venv of scripts/test/lib/kubernetes-venv.sh).

  k8s_revisions.py   every check below; prints `N passed, M failed` last

Each revision is rendered by Helm's own library (helm-python-sdk: values coalesced and checked
against the chart's schema as `helm upgrade` does), then applied to a model of the API server:
  - server-side apply (Helm 4's default): managedFields kept per manager, field by field (lists of
    containers, env, ports, volumes keyed as Kubernetes keys them); an apply that sets a field owned
    by another manager to another value is a conflict (the release FAILED) unless --force-conflicts;
    fields a manager stops applying are removed when no other manager owns them;
  - Helm 3's (and Helm 4's --server-side=false) three-way merge: fields of the new manifest that
    differ from the live object are set, fields of the old manifest missing from the new one are
    deleted, everything else is left;
  - kubectl scale, edit, patch, set env and an HPA: updates that take over the fields they change;
  - the API server's Deployment defaults (replicas 1, RollingUpdate 25%/25%) and its check that a
    Recreate strategy has no rollingUpdate.
It replays install -> a kubectl change -> helm upgrade (each documented flag) -> helm rollback with
this chart, and with the chart of earlier commits of the project (git history) to see that the model
predicts what those charts did (Helm 4's conflict on .spec.replicas, Helm 3's silent reset) and that
a release of an earlier chart upgrades to this one with the documented command. docs/tests.md says
what the model covers and what it does not. Also: the values a chart user sets across revisions
(maxmemory and the memory limit, resources: null, security contexts, labels, an umbrella chart's
enabled), docs/kubernetes.md's upgrade commands, and the chart version against the merge base.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kubernetes as kt

ROOT = kt.ROOT
CHART = kt.CHART
DOCS = ROOT / "docs" / "kubernetes.md"
RELEASE = kt.RELEASE
# Charts of earlier commits (git history): 0.2.0 as of the day the issue was filed (the last chart
# of 0.2.0), and 0.2.0 as first released (no redis.enabled yet).
CHART_020_LAST = "7c5f0c3189210d8680275f5b22090f420b85860d"
CHART_020_FIRST = "f9966fb817606e3470129aba5dc05c4eb8c2d863"
# A label value, as the API server checks it (k8s.io/apimachinery validation.IsValidLabelValue).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def log(text: str) -> None:
    print(f"k8s-revisions: {text}", flush=True)


# --- Charts: this one and earlier commits' -----------------------------------------


def chart_at(commit: str | None, into: Path) -> Path:
    """charts/dockercoins as of a commit (git archive), or this checkout's (None)."""
    if commit is None:
        return CHART
    out = into / commit[:12]
    if not out.exists():
        proc = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "charts/dockercoins"],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"git archive {commit}: {proc.stderr.decode().strip()} (a clone with its history is needed)")
        with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
            tar.extractall(out, filter="data")
    return out / "charts" / "dockercoins"


def merged(*layers: dict) -> dict:
    """Values layered as Helm coalesces them: later layers win key by key, maps merged."""
    out: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


class Release:
    """A Helm release: its revisions' charts, user-supplied values (the release's config) and manifests."""

    def __init__(self) -> None:
        self.revisions: list[tuple[Path, dict, list[dict]]] = []

    @property
    def chart(self) -> Path:
        return self.revisions[-1][0]

    @property
    def config(self) -> dict:
        return self.revisions[-1][1]

    @property
    def manifest(self) -> list[dict]:
        return self.revisions[-1][2]


RENDERS: dict[str, list[dict] | Exception] = {}
LOADED: dict[str, object] = {}


def render(chart: Path, values: dict, defaults: dict | None = None) -> list[dict]:
    """The objects Helm would send: chart's templates, its values.yaml (or `defaults` in its place,
    as --reuse-values does), the user's values over them; the schema checked. Raises on refusal.
    Each render is done once (the sequences repeat many)."""
    key = json.dumps([str(chart), values, defaults], sort_keys=True, default=str)
    if key not in RENDERS:
        try:
            RENDERS[key] = render_once(chart, values, defaults)
        except Exception as err:  # noqa: BLE001  the refusal is the answer, every time
            RENDERS[key] = err
    if isinstance(RENDERS[key], Exception):
        raise RENDERS[key]
    return copy.deepcopy(RENDERS[key])


def render_once(chart: Path, values: dict, defaults: dict | None) -> list[dict]:
    if defaults is None:
        if str(chart) not in LOADED:
            LOADED[str(chart)] = kt.helm().Chart.load(str(chart))
        out = LOADED[str(chart)].render(values, name=RELEASE, namespace=kt.NAMESPACE)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            import shutil

            copy_ = Path(tmp, "dockercoins")
            shutil.copytree(chart, copy_)
            (copy_ / "values.yaml").write_text(yaml.safe_dump(defaults))
            out = kt.helm().Chart.load(str(copy_)).render(values, name=RELEASE, namespace=kt.NAMESPACE)
    return [o for p in sorted(out) if p.endswith(".yaml") and "/tests/" not in p for o in kt.documents(out[p])]


def upgrade_values(release: Release, chart: Path, flag: str, sets: dict) -> tuple[dict, dict | None]:
    """(user values, chart defaults in place of the new chart's, or None) for `helm upgrade FLAG --set ...`."""
    if flag == "--reuse-values":
        # Helm: the old chart's values coalesced with the old config become the chart's values.
        old_defaults = kt.helm().Chart.load(str(release.chart)).merge_values(release.config)
        return merged(release.config, sets), old_defaults
    if flag == "--reset-then-reuse-values":
        return merged(release.config, sets), None
    return merged(sets), None  # no flag: only what this command sets, over the new chart's defaults


# --- A model of the API server's field ownership -----------------------------------

KEYED = {"containers": ("name",), "initContainers": ("name",), "env": ("name",), "volumes": ("name",),
         "volumeMounts": ("mountPath",), "imagePullSecrets": ("name",), "sysctls": ("name",)}


def list_key(listname: str, item: dict) -> tuple:
    if listname == "ports":  # containerPort (pods) or port+protocol (Services)
        if "containerPort" in item:
            return ("containerPort", item["containerPort"], item.get("protocol", "TCP"))
        return ("port", item.get("port"), item.get("protocol", "TCP"))
    return tuple((k, item.get(k)) for k in KEYED[listname])


def flatten(node, path: tuple = ()) -> dict[tuple, object]:
    """Leaf fields of an object: {path: value}; keyed lists by key, other lists whole (atomic)."""
    out: dict[tuple, object] = {}
    if isinstance(node, dict):
        if not node and path:
            out[path] = {}
        for k, v in node.items():
            out.update(flatten(v, path + (k,)))
    elif (isinstance(node, list) and node and path and (path[-1] in KEYED or path[-1] == "ports")
          and all(isinstance(i, dict) for i in node)):
        for item in node:
            out.update(flatten(item, path + (list_key(path[-1], item),)))
    else:
        out[path] = copy.deepcopy(node)
    return out


def unflatten(fields: dict[tuple, object]) -> dict:
    root: dict = {}
    for path, value in fields.items():
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(value)

    def lists(node):
        if isinstance(node, dict):
            if node and all(isinstance(k, tuple) for k in node):
                return [lists(v) for v in node.values()]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


def spec_fields(obj: dict) -> dict[tuple, object]:
    """What the model tracks of an object: its spec and its labels and annotations."""
    kept = {"spec": obj.get("spec", {}), "metadata": {k: v for k, v in obj.get("metadata", {}).items()
                                                        if k in ("labels", "annotations")}}
    return flatten(kept)


class Refused(Exception):
    """The API server refused a request: a conflict (server-side apply) or an invalid object."""


class Cluster:
    def __init__(self) -> None:
        self.live: dict[tuple[str, str], dict[tuple, object]] = {}
        self.owners: dict[tuple[str, str], dict[tuple, set[str]]] = {}

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    def get(self, kind: str, name: str) -> dict:
        return unflatten(self.live[(kind, name)])

    def field(self, kind: str, name: str, *path):
        return self.live[(kind, name)].get(tuple(path))

    def _default_and_validate(self, key: tuple[str, str]) -> None:
        fields, owners = self.live[key], self.owners[key]
        if key[0] != "Deployment":
            return
        fields.setdefault(("spec", "replicas"), 1)
        fields.setdefault(("spec", "strategy", "type"), "RollingUpdate")
        rolling = [p for p in fields if p[:3] == ("spec", "strategy", "rollingUpdate")]
        if fields[("spec", "strategy", "type")] == "RollingUpdate" and not rolling:
            fields[("spec", "strategy", "rollingUpdate", "maxSurge")] = "25%"
            fields[("spec", "strategy", "rollingUpdate", "maxUnavailable")] = "25%"
        if fields[("spec", "strategy", "type")] == "Recreate" and rolling:
            raise Refused(f"Deployment {key[1]}: spec.strategy.rollingUpdate: Forbidden: may not be "
                          "specified when strategy `type` is 'Recreate'")
        for path in list(owners):
            if path not in fields:
                del owners[path]

    def _commit(self, key, fields, owners) -> None:
        before = (self.live.get(key), self.owners.get(key))
        self.live[key], self.owners[key] = fields, owners
        try:
            self._default_and_validate(key)
        except Refused:
            if before[0] is None:
                del self.live[key], self.owners[key]
            else:
                self.live[key], self.owners[key] = before
            raise

    def apply(self, manager: str, objects: list[dict], force: bool = False) -> None:
        """Server-side apply of a whole manifest; objects the manager applied before and not now are deleted."""
        errors = []
        wanted = {self.key(o) for o in objects}
        for obj in objects:
            key, config = self.key(obj), spec_fields(obj)
            fields = copy.deepcopy(self.live.get(key, {}))
            owners = copy.deepcopy(self.owners.get(key, {}))
            conflicts = [p for p, v in config.items()
                         if p in fields and fields[p] != v and owners.get(p, set()) - {manager}]
            if conflicts and not force:
                errors.append(f"{key[0]} {key[1]}: conflict with " + ", ".join(
                    f"\"{'/'.join(sorted(owners[p] - {manager}))}\" on .{dotted(p)}" for p in conflicts))
                continue
            for p in conflicts:
                owners[p] = set()
            for p in [p for p, ms in owners.items() if manager in ms and p not in config]:
                owners[p].discard(manager)
                if not owners[p]:
                    fields.pop(p, None)
            for p, v in config.items():
                fields[p] = v
                owners.setdefault(p, set()).add(manager)
            try:
                self._commit(key, fields, owners)
            except Refused as err:
                errors.append(str(err))
        for key in [k for k, o in self.owners.items() if k not in wanted and any(manager in ms for ms in o.values())]:
            del self.live[key], self.owners[key]
        if errors:
            raise Refused("; ".join(errors))

    def three_way(self, manager: str, original: list[dict], modified: list[dict]) -> None:
        """Helm 3's upgrade and rollback: a patch from the old manifest to the new, on the live object."""
        errors = []
        old = {self.key(o): spec_fields(o) for o in original}
        for obj in modified:
            key, mod = self.key(obj), spec_fields(obj)
            fields = copy.deepcopy(self.live.get(key, {}))
            owners = copy.deepcopy(self.owners.get(key, {}))
            for p in old.get(key, {}):
                if p not in mod:
                    fields.pop(p, None)
                    owners.pop(p, None)
            for p, v in mod.items():
                if fields.get(p) != v:
                    fields[p] = v
                    owners[p] = {manager}
            try:
                self._commit(key, fields, owners)
            except Refused as err:
                errors.append(str(err))
        for key in set(old) - {self.key(o) for o in modified}:
            self.live.pop(key, None)
            self.owners.pop(key, None)
        if errors:
            raise Refused("; ".join(errors))

    def update(self, manager: str, kind: str, name: str, changes: dict[tuple, object]) -> None:
        """kubectl scale / edit / patch / set env, an HPA: an update that owns the fields it changes."""
        key = (kind, name)
        fields, owners = copy.deepcopy(self.live[key]), copy.deepcopy(self.owners[key])
        for p, v in changes.items():
            if v is None:
                fields.pop(p, None)
                owners.pop(p, None)
            elif fields.get(p) != v:
                fields[p] = v
                owners[p] = {manager}
        self._commit(key, fields, owners)


def dotted(path: tuple) -> str:
    """A field path as Kubernetes prints it: spec.replicas, spec.template.spec.containers[name=worker].image."""
    out = ""
    for p in path:
        if isinstance(p, tuple) and p and isinstance(p[0], tuple):
            out += "[" + ",".join(f"{k}={v}" for k, v in p) + "]"
        elif isinstance(p, tuple):
            out += f"[{p[0]}={p[1]}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# --- helm install / upgrade / rollback on the model ---------------------------------


class Helm:
    """helm install / upgrade / rollback with Helm 4 (server-side apply) or Helm 3 (three-way merge)."""

    def __init__(self, cluster: Cluster, version: int) -> None:
        self.cluster, self.version, self.release = cluster, version, Release()

    def _send(self, old: list[dict], new: list[dict], flags: tuple[str, ...]) -> None:
        if self.version == 3 or "--server-side=false" in flags:
            self.cluster.three_way("helm", old, new)
        else:
            self.cluster.apply("helm", new, force="--force-conflicts" in flags)

    def install(self, chart: Path, values: dict | None = None) -> None:
        objects = render(chart, values or {})
        self._send([], objects, ())
        self.release.revisions.append((chart, values or {}, objects))

    def upgrade(self, chart: Path, sets: dict, *flags: str) -> None:
        flag = next((f for f in flags if f in ("--reuse-values", "--reset-then-reuse-values")), "")
        values, defaults = upgrade_values(self.release, chart, flag, sets)
        objects = render(chart, values, defaults)
        self._send(self.release.manifest, objects, flags)
        self.release.revisions.append((chart, values, objects))

    def rollback(self, revision: int, *flags: str) -> None:
        chart, values, objects = self.release.revisions[revision - 1]
        self._send(self.release.manifest, objects, flags)
        self.release.revisions.append((chart, values, objects))


def outcome(step) -> str:
    try:
        step()
        return "ok"
    except Refused as err:
        return f"refused: {err}"
    except Exception as err:  # noqa: BLE001  a render refused by the schema or a template's fail
        return f"refused: {str(err).splitlines()[0]}{' ' + str(err).splitlines()[-1] if len(str(err).splitlines()) > 1 else ''}"


# --- The sequences -------------------------------------------------------------------

ROLLOUT = {"worker": {"image": {"tag": "v0.2"}}}
UPGRADES = {  # helm upgrade with each documented flag (Helm 3 has only the first)
    4: [("--reset-then-reuse-values",), ("--reset-then-reuse-values", "--force-conflicts"),
        ("--reset-then-reuse-values", "--server-side=false")],
    3: [("--reset-then-reuse-values",)],
}
# What a user does with kubectl between two revisions, and what must survive the next helm upgrade.
KUBECTL_OPS = {
    "kubectl scale deploy/worker --replicas=10": (
        "kubectl", "Deployment", "worker", {("spec", "replicas"): 10}),
    "an HPA on deploy/worker sets replicas 4": (
        "kube-controller-manager", "Deployment", "worker", {("spec", "replicas"): 4}),
    "kubectl edit service rng (selector + active: \"yes\")": (
        "kubectl-edit", "Service", "rng", {("spec", "selector", "active"): "yes"}),
    "kubectl set env deploy/worker WORKER_IGNORE_SIGTERM=true": (
        "kubectl-set", "Deployment", "worker",
        {("spec", "template", "spec", "containers", (("name", "worker"),), "env", (("name", "WORKER_IGNORE_SIGTERM"),),
          "name"): "WORKER_IGNORE_SIGTERM",
         ("spec", "template", "spec", "containers", (("name", "worker"),), "env", (("name", "WORKER_IGNORE_SIGTERM"),),
          "value"): "true"}),
}


def sequence(chart: Path, version: int, op: str, flags: tuple[str, ...], values: dict | None = None,
             rollback: bool = True) -> tuple[list[str], Cluster]:
    """install -> the kubectl op -> helm upgrade FLAGS (the rollout lesson) -> helm rollback 1:
    the steps' outcomes, and whether the op's change is still there after each step."""
    cluster = Cluster()
    helm = Helm(cluster, version)
    helm.install(chart, values)
    manager, kind, name, change = KUBECTL_OPS[op]
    cluster.update(manager, kind, name, change)
    seen = []

    def kept() -> bool:
        return all(cluster.live[(kind, name)].get(p) == v for p, v in change.items())

    seen.append(f"upgrade {outcome(lambda: helm.upgrade(chart, ROLLOUT, *flags))}, change {'kept' if kept() else 'LOST'}")
    if rollback:
        seen.append(f"rollback {outcome(lambda: helm.rollback(1, *flags))}, change {'kept' if kept() else 'LOST'}")
    return seen, cluster


def check_sequences(charts: Path) -> None:
    here = chart_at(None, charts)
    for version, flag_sets in UPGRADES.items():
        for op in KUBECTL_OPS:
            for flags in flag_sets:
                seen, cluster = sequence(here, version, op, flags)
                kt.check(all(s.startswith(("upgrade ok, change kept", "rollback ok, change kept")) for s in seen),
                         f"Helm {version}: install, {op}, helm upgrade {' '.join(flags)} --set worker.image.tag=v0.2, "
                         f"helm rollback 1: {'; '.join(seen)}")
    # A kubectl change to a field the chart sets: Helm 4 refuses; --force-conflicts and the three-way
    # merge (Helm 3, --server-side=false) undo it, as docs/kubernetes.md says.
    KUBECTL_OPS["kubectl set env deploy/worker WORKER_SLEEP=0"] = (
        "kubectl-set", "Deployment", "worker",
        {("spec", "template", "spec", "containers", (("name", "worker"),), "env", (("name", "WORKER_SLEEP"),),
          "value"): "0"})
    got = {(v, f): sequence(here, v, "kubectl set env deploy/worker WORKER_SLEEP=0", f, rollback=False)[0][0]
           for v, flag_sets in UPGRADES.items() for f in flag_sets}
    want = {(4, UPGRADES[4][0]): "conflict with \"kubectl-set\" on .spec.template.spec.containers[name=worker]"
                                 ".env[name=WORKER_SLEEP].value",
            (4, UPGRADES[4][1]): "upgrade ok, change LOST", (4, UPGRADES[4][2]): "upgrade ok, change LOST",
            (3, UPGRADES[3][0]): "upgrade ok, change LOST"}
    for key, text in want.items():
        kt.check(text in got[key], f"Helm {key[0]}: kubectl set env deploy/worker WORKER_SLEEP=0 (a field the chart "
                 f"sets), then helm upgrade {' '.join(key[1])}: {got[key]}")
    del KUBECTL_OPS["kubectl set env deploy/worker WORKER_SLEEP=0"]
    # Replicas set by the user are Helm's: kubectl scale then conflicts (Helm 4), as NOTES.txt says.
    seen, _ = sequence(here, 4, "kubectl scale deploy/worker --replicas=10", ("--reset-then-reuse-values",),
                       {"worker": {"replicas": 3}}, rollback=False)
    kt.check("conflict" in seen[0] and ".spec.replicas" in seen[0],
             f"Helm 4, --set worker.replicas=3 then kubectl scale: the upgrade conflicts on .spec.replicas "
             f"(NOTES.txt then says helm upgrade --set worker.replicas): {seen[0]}")
    # The model predicts what the chart of the issue's day did (so these checks can fail).
    old = chart_at(CHART_020_LAST, charts)
    seen4, _ = sequence(old, 4, "kubectl scale deploy/worker --replicas=10", ("--reuse-values",), rollback=False)
    _seen3, c3 = sequence(old, 3, "kubectl scale deploy/worker --replicas=10", ("--reuse-values",), rollback=False)
    kt.check("conflict with \"kubectl\" on .spec.replicas" in seen4[0]
             and c3.field("Deployment", "worker", "spec", "replicas") == 1,
             f"the model on chart 0.2.0 ({CHART_020_LAST[:7]}): kubectl scale then helm upgrade --reuse-values is "
             f"refused by Helm 4 ({seen4[0]}) and reset to 1 replica by Helm 3")
    # Redis: persistence turned on for a running release.
    for version in (4, 3):
        for chart, name, want in ((here, "this chart", "ok"), (old, f"chart 0.2.0 ({CHART_020_LAST[:7]})", "Forbidden")):
            cluster = Cluster()
            helm = Helm(cluster, version)
            helm.install(chart)
            got = outcome(lambda helm=helm, chart=chart: helm.upgrade(chart, {"redis": {"persistence": {"enabled": True}}}, "--reset-then-reuse-values"))
            kt.check((got == "ok") if want == "ok" else ("Forbidden" in got),
                     f"Helm {version}, {name}: helm upgrade --set redis.persistence.enabled=true on a running release: "
                     f"{got}")


# The documented one-time step before upgrading a release of chart 0.2.0 or older
# (`kubectl patch deploy redis`): Redis's strategy to Recreate, its rollingUpdate gone.
REDIS_RECREATE_PATCH = {("spec", "strategy", "type"): "Recreate",
                        ("spec", "strategy", "rollingUpdate", "maxSurge"): None,
                        ("spec", "strategy", "rollingUpdate", "maxUnavailable"): None}


def check_upgrade_from_earlier(charts: Path) -> None:
    """A release of an earlier chart, scaled with kubectl, upgraded to this chart as docs/kubernetes.md says."""
    here = chart_at(None, charts)
    for commit in (CHART_020_FIRST, CHART_020_LAST):
        old = chart_at(commit, charts)
        for version in (4, 3):
            cluster = Cluster()
            helm = Helm(cluster, version)
            helm.install(old, {"webui": {"service": {"type": "ClusterIP"}}})
            cluster.update("kubectl", "Deployment", "worker", {("spec", "replicas"): 10})
            reuse = outcome(lambda helm=helm: helm.upgrade(here, ROLLOUT, "--reuse-values"))
            unpatched = outcome(lambda helm=helm: helm.upgrade(here, ROLLOUT, "--reset-then-reuse-values"))
            # The documented one-time step for a release of chart 0.2.0 or older, then the upgrade.
            cluster.update("kubectl-patch", "Deployment", "redis", REDIS_RECREATE_PATCH)
            upgraded = outcome(lambda helm=helm: helm.upgrade(here, ROLLOUT, "--reset-then-reuse-values"))
            replicas = cluster.field("Deployment", "worker", "spec", "replicas")
            image = cluster.field("Deployment", "worker", "spec", "template", "spec", "containers",
                                  (("name", "worker"),), "image")
            service = cluster.field("Service", "webui", "spec", "type")
            kt.check("Forbidden" in unpatched and upgraded == "ok" and image.endswith("/worker:v0.2")
                     and service == "ClusterIP" and replicas == (10 if version == 4 else 1),
                     f"Helm {version}: a release of chart {commit[:7]} scaled to 10 workers, helm upgrade to this chart "
                     f"--reset-then-reuse-values --set worker.image.tag=v0.2: without the documented patch of "
                     f"deploy/redis {unpatched[:90]}...; with it {upgraded}, worker {image}, webui Service {service} "
                     f"(the release's values kept), {replicas} worker(s) (Helm 3: reset once, as the CHANGELOG says)")
            if commit == CHART_020_FIRST and version == 4:
                kt.check("missing propert" in reuse,
                         f"--reuse-values from chart {commit[:7]} fails the schema (why the docs say "
                         f"--reset-then-reuse-values): {reuse[:160]}")
            # Then the rollout lesson again, and a rollback to the release's previous revision (this chart).
            cluster.update("kubectl", "Deployment", "worker", {("spec", "replicas"): 10})
            again = outcome(lambda helm=helm: helm.upgrade(here, {"worker": {"image": {"tag": "v0.3"}}}, "--reset-then-reuse-values"))
            back = outcome(lambda helm=helm: helm.rollback(len(helm.release.revisions) - 1))
            kt.check(again == "ok" and back == "ok" and cluster.field("Deployment", "worker", "spec", "replicas") == 10,
                     f"Helm {version}: then kubectl scale to 10, helm upgrade (worker:v0.3) {again}, helm rollback "
                     f"{back}: {cluster.field('Deployment', 'worker', 'spec', 'replicas')} workers")


def check_upgrade_values_sets(charts: Path) -> None:
    """Every values set of an earlier chart (its ci/*-values.yaml), installed, then upgraded to this chart
    with the documented command (after the documented patch of deploy/redis): Helm 4 and Helm 3."""
    here = chart_at(None, charts)
    for commit in (CHART_020_FIRST, CHART_020_LAST):
        old = chart_at(commit, charts)
        results = {}
        for path in sorted((old / "ci").glob("*-values.yaml")):
            values = kt.values_file(path)
            for version in (4, 3):
                cluster = Cluster()
                helm = Helm(cluster, version)
                helm.install(old, values)
                for kind, name in [k for k in cluster.live if k[0] == "Deployment" and k[1].endswith("redis")]:
                    cluster.update("kubectl-patch", kind, name, REDIS_RECREATE_PATCH)  # deploy/<release>-redis with prefixNames
                results[(path.name.removesuffix("-values.yaml"), version)] = outcome(
                    lambda helm=helm: helm.upgrade(here, ROLLOUT, "--reset-then-reuse-values"))
        bad = {f"{k[0]} (Helm {k[1]})": v for k, v in results.items() if v != "ok"}
        kt.check(not bad, f"the {len(results) // 2} values sets of chart {commit[:7]} (its ci/*-values.yaml), installed and "
                 "upgraded to this chart with --reset-then-reuse-values --set worker.image.tag=v0.2, Helm 4 and 3",
                 "; ".join(f"{k}: {v[:160]}" for k, v in bad.items()))


# --- Values across revisions -----------------------------------------------------------


def redis_of(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("redis"))


def refusal(values: dict) -> str:
    try:
        render(CHART, values)
        return ""
    except Exception as err:  # noqa: BLE001
        return " ".join(str(err).split())


def check_values() -> None:
    # (3, 4) Redis is replaced, never rolled, in every values set.
    sets = dict(kt.values_sets())
    sets["longer run"] = {"redis": {"resources": {"limits": {"memory": "4Gi"}}}}
    problems = []
    for name, values in sets.items():
        redis = [o for o in render(CHART, values) if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("redis")]
        for r in redis:
            strategy = r["spec"].get("strategy", {})
            if strategy != {"type": "Recreate"}:
                problems.append(f"{name}: {strategy}")
    kt.check(not problems, "Redis's Deployment is strategy Recreate with no rollingUpdate key in every values set "
             "(never two Redis behind Service redis)", "; ".join(problems))
    # (5) maxmemory and the memory limit.
    args = {name: redis_of(render(CHART, v))["spec"]["template"]["spec"]["containers"][0]["args"]
            for name, v in (("default", {}), ("256Mi", {"redis": {"resources": {"limits": {"memory": "256Mi"}}}}),
                            ("4Gi", {"redis": {"resources": {"limits": {"memory": "4Gi"}}}}))}
    mm = {k: a[a.index("--maxmemory") + 1] if "--maxmemory" in a else None for k, a in args.items()}
    kt.check(mm == {"default": "512mb", "256Mi": "128mb", "4Gi": "2gb"},
             f"redis maxmemory is half the memory limit: {mm}")
    too_big = refusal({"redis": {"maxmemory": "512mb", "resources": {"limits": {"memory": "256Mi"}}}})
    kt.check("redis.maxmemory (512mb) must be at most half of redis.resources.limits.memory (256Mi)" in too_big,
             f"--set redis.maxmemory=512mb,redis.resources.limits.memory=256Mi is refused: {too_big[:200]}")
    none = refusal({"redis": {"resources": None}})
    kt.check(not none, f"--set redis.resources=null (no requests or limits) renders {none[:200]}")
    if not none:
        r = redis_of(render(CHART, {"redis": {"resources": None}}))["spec"]["template"]["spec"]["containers"][0]
        kt.check("resources" not in r and "--maxmemory" not in r["args"],
                 f"redis.resources=null: no resources, no --maxmemory: {r['args']}")
    # (7) an umbrella chart's condition key.
    umbrella = refusal({"enabled": True, "global": {}})
    kt.check(not umbrella, f"an umbrella chart's dockercoins.enabled (and global) are accepted {umbrella[:200]}")
    # (8) the version label is a valid label value for any tag the schema accepts.
    bad = []
    for tag in ("_v0.2", "v0.2-", "v0.2.", "a" * 128, "_" + "b" * 70 + "-x", "v0.2_rc.1"):
        try:
            objects = render(CHART, {"image": {"tag": tag}})
        except Exception as err:  # noqa: BLE001
            bad.append(f"{tag[:20]}: refused {str(err).splitlines()[-1][:80]}")
            continue
        for o in objects:
            for labels in (o["metadata"].get("labels", {}),
                           o.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})):
                for k, v in labels.items():
                    if not (LABEL_VALUE.match(str(v)) and len(str(v)) <= 63):
                        bad.append(f"tag {tag[:20]}...: {o['kind']} {o['metadata']['name']} {k}={v!r}")
    kt.check(not bad, "every label value is valid (at most 63 characters, alphanumeric at both ends) for image tags "
             "such as _v0.2, v0.2-, v0.2. and 128 characters", "; ".join(bad[:4]))
    # (9) the security contexts from values: today's defaults, OpenShift's restricted-v2 (no fixed user).
    d = [o for o in render(CHART, {}) if o["kind"] == "Deployment"]
    defaults = {o["metadata"]["name"]: (o["spec"]["template"]["spec"].get("securityContext"),
                                        o["spec"]["template"]["spec"]["containers"][0].get("securityContext"))
                for o in d}
    kt.check(defaults["worker"][0].get("runAsUser") == 65532 and defaults["redis"][0].get("fsGroup") == 999
             and defaults["worker"][1].get("capabilities") == {"drop": ["ALL"]},
             "security contexts by default: user 65532 (redis 999, fsGroup 999), every capability dropped")
    openshift = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None},
                 "redis": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}}
    why = refusal(openshift)
    fixed = [] if why else [f"{o['metadata']['name']}: {sorted(o['spec']['template']['spec'].get('securityContext', {}))}"
                            for o in render(CHART, openshift) if o["kind"] == "Deployment"
                            and {"runAsUser", "runAsGroup", "fsGroup"} & set(o["spec"]["template"]["spec"].get("securityContext", {}))]
    kt.check(not why and not fixed, "--set podSecurityContext.runAsUser=null ... (OpenShift restricted-v2 picks the "
             f"user): no fixed user, group or fsGroup left {why[:150]}", "; ".join(fixed))
    # (6) pullPolicy Always only with a registry.
    always = refusal({"image": {"pullPolicy": "Always"}})
    kt.check("https://localhost" in always and not refusal({"image": {"pullPolicy": "Always", "registry": "127.0.0.1:5000"}}),
             f"image.pullPolicy=Always with the localhost/ images is refused, with a registry accepted: {always[:120]}")


# --- What users of other charts (podinfo's) expect ------------------------------------------


def find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def check_chart_features(charts: Path) -> None:
    here = chart_at(None, charts)
    default = render(here, {})
    kinds = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount", "HTTPRoute", "ServiceMonitor"}
    kt.check(not [o for o in default if o["kind"] in kinds],
             "by default: no autoscaler, budget, ServiceAccount, HTTPRoute or ServiceMonitor (the workshop's objects only)")
    # An HPA: the Deployment has no replicas (even with worker.replicas set), and the autoscaler's count
    # survives helm upgrade and rollback.
    hpa_values = {"worker": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}, "replicas": 3}}
    objs = render(here, hpa_values)
    hpa, worker = find(objs, "HorizontalPodAutoscaler", "worker"), find(objs, "Deployment", "worker")
    kt.check(bool(hpa) and hpa["apiVersion"] == "autoscaling/v2"
             and hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
             and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8) and "replicas" not in worker["spec"],
             "worker.autoscaling.enabled: an autoscaling/v2 HPA on deploy/worker (2 to 8), and no replicas in the "
             "Deployment even with worker.replicas set")
    for version in (4, 3):
        cluster = Cluster()
        helm = Helm(cluster, version)
        helm.install(here, hpa_values)
        cluster.update("kube-controller-manager", "Deployment", "worker", {("spec", "replicas"): 6})
        up = outcome(lambda helm=helm: helm.upgrade(here, ROLLOUT, "--reset-then-reuse-values"))
        back = outcome(lambda helm=helm: helm.rollback(1))
        kt.check(up == back == "ok" and cluster.field("Deployment", "worker", "spec", "replicas") == 6,
                 f"Helm {version}: the chart's HPA sets 6 workers, helm upgrade {up}, helm rollback {back}: "
                 f"{cluster.field('Deployment', 'worker', 'spec', 'replicas')} workers")
    no_cpu = refusal({"worker": {"autoscaling": {"enabled": True}, "resources": None}})
    kt.check("worker.autoscaling needs worker.resources.requests.cpu" in no_cpu,
             f"an HPA without a CPU request is refused: {no_cpu[:120]}")
    # A PodDisruptionBudget only for more than one pod.
    pdbs = {name: [o["metadata"]["name"] for o in render(here, v) if o["kind"] == "PodDisruptionBudget"]
            for name, v in (("default", {}), ("hasher.replicas=1", {"hasher": {"replicas": 1}}),
                            ("hasher.replicas=2", {"hasher": {"replicas": 2}}), ("hpa min 2", hpa_values),
                            ("hpa min 1", {"worker": {"autoscaling": {"enabled": True, "minReplicas": 1}}}),
                            ("rng DaemonSet", {"rng": {"kind": "DaemonSet", "replicas": 3}}))}
    kt.check(pdbs == {"default": [], "hasher.replicas=1": [], "hasher.replicas=2": ["hasher"], "hpa min 2": ["worker"],
                      "hpa min 1": [], "rng DaemonSet": []},
             f"a PodDisruptionBudget only for a Deployment of more than one pod: {pdbs}")
    pdb = find(render(here, {"hasher": {"replicas": 2}}), "PodDisruptionBudget", "hasher")
    hasher = find(render(here, {"hasher": {"replicas": 2}}), "Deployment", "hasher")
    kt.check(bool(pdb) and pdb["spec"].get("maxUnavailable") == 1 and all(
        hasher["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()),
        "the budget lets one hasher pod go at a time and selects the hasher's pods")
    # topologySpreadConstraints, a ServiceAccount, probes from values.
    spread = {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "ScheduleAnyway"}]}
    bad = []
    for o in render(here, spread):
        if o["kind"] == "Deployment" and o["metadata"]["name"] != "redis":
            tpl = o["spec"]["template"]
            (c,) = tpl["spec"].get("topologySpreadConstraints", [{}])[:1] or [{}]
            sel = c.get("labelSelector", {}).get("matchLabels", {})
            if not sel or any(tpl["metadata"]["labels"].get(k) != v for k, v in sel.items()) or sel.get("app") != o["metadata"]["name"]:
                bad.append(f"{o['metadata']['name']}: {c}")
    kt.check(not bad, "topologySpreadConstraints: each component's pods spread by their own labels", "; ".join(bad))
    sa_objs = render(here, {"serviceAccount": {"create": True}})
    sa = find(sa_objs, "ServiceAccount", "dockercoins")
    users = {o["metadata"]["name"]: o["spec"]["template"]["spec"].get("serviceAccountName") for o in sa_objs
             if o["kind"] == "Deployment" and o["metadata"]["name"] != "redis"}
    kt.check(bool(sa) and sa.get("automountServiceAccountToken") is False and set(users.values()) == {"dockercoins"},
             f"serviceAccount.create: ServiceAccount dockercoins (token not mounted), used by {sorted(users)}")
    probes = render(here, {"probes": {"readiness": {"periodSeconds": 7, "failureThreshold": 5},
                                      "startup": {"enabled": True, "failureThreshold": 60}}})
    c = find(probes, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    plain = find(default, "Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    kt.check(c["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 7,
                                     "timeoutSeconds": 2, "failureThreshold": 5}
             and c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
             and c["startupProbe"]["failureThreshold"] == 60 and "startupProbe" not in plain,
             "probe timings from probes.*, a startupProbe on /healthz only with probes.startup.enabled")
    # HTTPRoute and ServiceMonitor.
    route_objs = render(here, {"webui": {"httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}],
                                                       "hostnames": ["coins.example.com"]}}})
    route, webui = find(route_objs, "HTTPRoute", "webui"), find(route_objs, "Service", "webui")
    backend = route["spec"]["rules"][0]["backendRefs"][0] if route else {}
    kt.check(bool(route) and route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["spec"]["parentRefs"] == [{"name": "gw"}]
             and backend == {"name": "webui", "port": webui["spec"]["ports"][0]["port"]}
             and route["spec"]["hostnames"] == ["coins.example.com"],
             f"webui.httpRoute: an HTTPRoute to Service webui port {webui['spec']['ports'][0]['port']} beside the Ingress")
    no_parent = refusal({"webui": {"httpRoute": {"enabled": True}}})
    kt.check("webui.httpRoute.parentRefs" in no_parent, f"an HTTPRoute without a Gateway is refused: {no_parent[:100]}")
    sm_objs = render(here, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    sm = find(sm_objs, "ServiceMonitor", "dockercoins")
    picked = []
    if sm:
        sel = sm["spec"]["selector"]
        for o in sm_objs:
            labels = o["metadata"].get("labels", {})
            if (o["kind"] == "Service"
                    and all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())
                    and all(labels.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))
                    and any(p.get("name") == sm["spec"]["endpoints"][0]["port"] for p in o["spec"]["ports"])):
                picked.append(o["metadata"]["name"])
    kt.check(bool(sm) and sorted(picked) == ["hasher", "rng", "webui"] and sm["metadata"]["labels"].get("release") == "kps"
             and sm["spec"]["endpoints"][0]["path"] == "/metrics",
             f"metrics.serviceMonitor: a ServiceMonitor scraping /metrics of Services {sorted(picked)} (labels release: kps)")


# --- The docs and the chart's version ----------------------------------------------------


def check_docs() -> None:
    text = DOCS.read_text()
    notes = kt.render().get("dockercoins/templates/NOTES.txt", "")
    reuse = [line.strip() for line in (text + notes).splitlines() if re.search(r"--reuse-values(?! )|--reuse-values ", line)
             and "--reset-then-reuse-values" not in line and "not --reuse-values" not in line and "`--reuse-values`" not in line]
    kt.check(not reuse and "--reset-then-reuse-values" in notes,
             "docs/kubernetes.md and NOTES.txt upgrade with --reset-then-reuse-values, never --reuse-values",
             "; ".join(reuse[:3]))
    always = [line.strip() for line in text.splitlines() if re.search(r"pullPolicy[=: ]+`?Always", line)
              and "localhost" not in line and "registry" not in line]
    kt.check(not always, "docs/kubernetes.md: imagePullPolicy Always only with a registry", "; ".join(always[:3]))
    sentinel = re.findall(r"addresses: \[([^\]]*)\]", text)
    single = [s for s in sentinel if len(s.split(",")) < 3 or re.search(r"(^|,)\s*redis:26379", s)]
    kt.check(bool(sentinel) and not single and "redis-headless" in text,
             f"docs/kubernetes.md: Sentinel addresses listed per pod (headless Service), not one Service: {sentinel}")
    variants = (ROOT / "scripts" / "variants.sh").read_text()
    tag = re.search(r'^TAG="\$\{TAG:-([^}]*)\}"', variants, re.MULTILINE)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    kt.check(bool(tag) and tag.group(1) == app_version and "PLATFORMS" in variants,
             f"scripts/variants.sh: default TAG {tag.group(1) if tag else None} = the manifests' {app_version}, "
             "and a PLATFORMS knob")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text.split("-")[0])[:3])


def check_chart_version() -> None:
    """The chart's version moved whenever charts/ changed since the merge base with main (on main:
    since its first parent), and CHANGELOG.md names it."""
    main = next((ref for ref in ("main", "origin/main") if subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", ref], capture_output=True, check=False).returncode == 0), None)
    if main is None:
        kt.fail("chart version: no main or origin/main to compare with (a clone with its history is needed)")
        return
    head = git("rev-parse", "HEAD")
    base = git("merge-base", "HEAD", main)
    if base == head:
        base = git("rev-parse", "HEAD^1")
    changed = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", base, "--", "charts/"], check=False).returncode != 0
    now = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    try:
        then = yaml.safe_load(git("show", f"{base}:charts/dockercoins/Chart.yaml"))["version"]
    except subprocess.CalledProcessError:
        then = "0.0.0"
    kt.check(not changed or version_tuple(now) > version_tuple(then),
             f"charts/ {'changed' if changed else 'unchanged'} since {base[:7]} ({main}): chart version {then} -> {now}")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    kt.check(f"chart {now}" in changelog.lower() or f"chart `{now}`" in changelog.lower(),
             f"CHANGELOG.md names chart {now}")


def main() -> int:
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        charts = Path(tmp)
        sections = [
            ("install -> kubectl -> helm upgrade (each documented flag) -> helm rollback, Helm 4 and Helm 3",
             lambda: check_sequences(charts)),
            ("releases of earlier charts (git history) upgraded to this one", lambda: check_upgrade_from_earlier(charts)),
            ("the values sets of earlier charts upgraded to this one", lambda: check_upgrade_values_sets(charts)),
            ("what users of other charts expect: HPA, PDB, spread, ServiceAccount, probes, HTTPRoute, ServiceMonitor",
             lambda: check_chart_features(charts)),
            ("values a chart user sets", check_values),
            ("docs, NOTES.txt, variants.sh", check_docs),
            ("the chart's version", check_chart_version),
        ]
        for title, section in sections:
            log(title)
            try:
                section()
            except Exception as err:  # noqa: BLE001  an unexpected error fails its section, with its message; the others run
                import traceback

                traceback.print_exc()
                kt.fail(f"k8s_revisions.py, {title}: {type(err).__name__}: {' '.join(str(err).split())[:300]}")
    log(f"done in {time.time() - started:.0f} s")
    return kt.checks.summary()


if __name__ == "__main__":
    sys.exit(main())
