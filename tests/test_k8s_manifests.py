"""The Kubernetes manifests under k8s/: they render, they validate strictly against the
Kubernetes schemas, and the rendered objects do what k8s/README.md promises.

Needs kubectl (with built-in kustomize) and kubernetes-validate (dev extra; it brings PyYAML).
Without kubectl the tests are skipped (no cluster is needed, only the client binary), except in
CI (CI=true), where .ci/run installs kubectl and its absence is a failure.
"""
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
VALIDATE = K8S / "validate.sh"

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None and os.environ.get("CI", "").lower() != "true", reason="kubectl not installed (Debian: apt-get install kubernetes-client)")

TARGETS = ["base", "overlays/dev", "overlays/scaled"]
# What each overlay is meant to run: the worker Deployment's replicas is the scale knob.
WORKER_REPLICAS = {"base": 4, "overlays/dev": 2, "overlays/scaled": 16}
# role (= component label = container name = `drlbox <role>`) -> the port it serves gRPC health on
ROLE_PORTS = {"parameter-server": 50051, "worker": 50052, "replay": 50053, "evaluator": 50054,
              "ps-shard": 50055}
# ... and the port it serves Prometheus metrics on (drlbox.metrics.DEFAULT_METRICS_PORTS)
METRICS_PORTS = {"parameter-server": 9450, "worker": 9451, "replay": 9452, "evaluator": 9453,
                 "ps-shard": 9454}
ROLE_KINDS = {"parameter-server": "StatefulSet", "worker": "Deployment",
              "replay": "Deployment", "evaluator": "Deployment", "ps-shard": "Deployment"}
ROLE_IMAGES = {"parameter-server": "drlbox/parameter-server", "worker": "drlbox/worker",
               "replay": "drlbox/replay", "evaluator": "drlbox/worker",
               "ps-shard": "drlbox/parameter-server"}
# Parameter-server shards per overlay: DRLBOX_PS_SHARDS, with one ps-shard pod fewer.
PS_SHARDS = {"base": 1, "overlays/dev": 1, "overlays/scaled": 2}
UID = 10001


@functools.lru_cache(maxsize=None)
def render(target):
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / target)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(docs, kind, name):
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(docs):
    """role -> the StatefulSet/Deployment running it."""
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"):
            out[d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]] = d
    return out


def env_of(docs, container):
    """The container's effective environment: envFrom ConfigMaps, then env (which wins)."""
    env = {}
    for src in container.get("envFrom", []):
        assert "configMapRef" in src, "only ConfigMaps are expected in envFrom"
        env.update(find(docs, "ConfigMap", src["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        assert "valueFrom" not in var or "secretKeyRef" not in var["valueFrom"], \
            f"{var['name']}: secrets go in files, not environment variables"
        env[var["name"]] = var.get("value")
    return env


def run_validator(*targets):
    return subprocess.run(["bash", str(VALIDATE), *map(str, targets)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_validation_passes_for_base_and_every_overlay():
    makefile = ROOT / "Makefile"
    has_target = makefile.exists() and re.search(r"^k8s-validate\s*:", makefile.read_text(),
                                                  re.M)
    if has_target and shutil.which("make"):
        cmd = ["make", "-s", "--no-print-directory", "k8s-validate"]
    else:
        cmd = ["bash", str(VALIDATE)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    overlays = sorted(p.parent.name for p in K8S.glob("overlays/*/kustomization.yaml"))
    assert len(overlays) >= 2
    for target in ["base"] + [f"overlays/{o}" for o in overlays]:
        assert re.search(rf"^ok +k8s/{target} \(\d+ objects valid\)$", out.stdout, re.M), \
            out.stdout
    assert "FAIL" not in out.stdout


@pytest.mark.parametrize("broken", [
    pytest.param(("replicas: 2", "replicas: \"two\""), id="wrong-type"),
    pytest.param(("replicas: 2", "replicas: 2\n  replicaz: 3"), id="unknown-field"),
    pytest.param(("apps/v1", "apps/v2"), id="unknown-apiVersion"),
    pytest.param(("name: c\n", "name: c\n          livenessProbe: {grpc: {port: \"x\"}}\n"),
                 id="probe-port-not-a-number"),
])
def test_validator_rejects_broken_manifests(tmp_path, broken):
    manifest = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replicas: 2
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: c
          image: drlbox/worker:latest
"""
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d, text in ((good, manifest), (bad, manifest.replace(*broken))):
        d.mkdir()
        (d / "deployment.yaml").write_text(text)
        (d / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    assert (bad / "deployment.yaml").read_text() != manifest
    ok = run_validator(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the control passes...
    out = run_validator(bad)
    assert out.returncode != 0, out.stdout  # ...so the failure is the defect's
    assert re.search(r"^FAIL .*bad", out.stdout, re.M), out.stdout


def test_validator_fails_on_a_directory_that_does_not_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    out = run_validator(tmp_path)
    assert out.returncode != 0
    assert "kubectl kustomize failed" in out.stdout


def test_worker_replicas_differ_per_overlay_as_intended():
    got = {t: find(render(t), "Deployment", "drlbox-worker")["spec"]["replicas"]
           for t in TARGETS}
    assert got == WORKER_REPLICAS


@pytest.mark.parametrize("target", TARGETS)
def test_ps_shard_pods_are_one_fewer_than_the_shards_the_parameter_server_cuts(target):
    docs = render(target)
    ps = find(docs, "StatefulSet", "drlbox-parameter-server")
    shards = int(env_of(docs, ps["spec"]["template"]["spec"]["containers"][0])[
        "DRLBOX_PS_SHARDS"])
    assert shards == PS_SHARDS[target]
    assert find(docs, "Deployment", "drlbox-ps-shard")["spec"]["replicas"] == shards - 1


def test_scaled_overlay_pins_image_tags_and_dev_uses_local_latest():
    for target, tag in (("overlays/dev", "latest"), ("overlays/scaled", "0.1.0")):
        for role, w in workloads(render(target)).items():
            (c,) = w["spec"]["template"]["spec"]["containers"]
            assert c["image"] == f"{ROLE_IMAGES[role]}:{tag}", (target, role)


@pytest.mark.parametrize("target", TARGETS)
def test_every_role_runs_with_grpc_probes_resources_its_port_and_metrics(target):
    docs = render(target)
    roles = workloads(docs)
    assert set(roles) == set(ROLE_PORTS)
    for role, w in roles.items():
        assert w["kind"] == ROLE_KINDS[role], role
        assert w["metadata"]["namespace"] == "drlbox"
        pod = w["spec"]["template"]["spec"]
        assert not pod.get("initContainers"), "workers/evaluator retry on their own"
        (c,) = pod["containers"]
        port = ROLE_PORTS[role]
        assert c["name"] == role
        assert c["command"] == ["drlbox"] and c["args"] == [role]
        assert c["image"].split(":")[0] == ROLE_IMAGES[role]
        metrics = METRICS_PORTS[role]
        assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("grpc", port),
                                                                          ("metrics", metrics)]
        env = env_of(docs, c)
        assert env["DRLBOX_PORT"] == str(port)
        assert env["DRLBOX_METRICS_PORT"] == str(metrics)
        annotations = w["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true",
                               "prometheus.io/port": str(metrics),
                               "prometheus.io/path": "/metrics"}, role
        assert env["DRLBOX_HOST"] == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (role, probe)
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests), role
        assert {"cpu", "memory"} <= set(limits), role


@pytest.mark.parametrize("target", TARGETS)
def test_containers_run_as_uid_10001_read_only_with_a_writable_tmp(target):
    for role, w in workloads(render(target)).items():
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["fsGroup"] == UID
        assert pod["enableServiceLinks"] is False  # no DRLBOX_*_PORT=tcp://... variables
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], role


@pytest.mark.parametrize("target", TARGETS)
def test_parameter_server_is_a_statefulset_with_a_pvc_at_data(target):
    docs = render(target)
    ps = find(docs, "StatefulSet", "drlbox-parameter-server")
    assert ps["spec"]["replicas"] == 1
    (c,) = ps["spec"]["template"]["spec"]["containers"]
    (data,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/data"]
    assert not data.get("readOnly")
    # /data comes from the claim template, not from a pod volume (emptyDir would lose jobs).
    assert data["name"] not in {v["name"] for v in ps["spec"]["template"]["spec"]["volumes"]}
    (claim,) = [t for t in ps["spec"]["volumeClaimTemplates"]
                if t["metadata"]["name"] == data["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert env_of(docs, c)["DRLBOX_DATA_DIR"] == "/data"
    governing = find(docs, "Service", ps["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("target", TARGETS)
def test_token_comes_from_the_secret_as_a_file(target):
    docs = render(target)
    secret = find(docs, "Secret", "drlbox-token")
    assert "token" in secret.get("stringData", {}) or "token" in secret.get("data", {})
    for role, w in workloads(docs).items():
        pod = w["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        token_file = env_of(docs, c)["DRLBOX_TOKEN_FILE"]
        directory, filename = token_file.rsplit("/", 1)
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == directory]
        assert mount.get("readOnly") is True
        (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert vol["secret"]["secretName"] == "drlbox-token", role
        items = vol["secret"].get("items")
        assert items is None or {"key": "token", "path": filename} in items, role
        # readable by uid 10001 through the fsGroup, not world-readable
        assert vol["secret"]["defaultMode"] & 0o007 == 0


@pytest.mark.parametrize("target", TARGETS)
def test_services_expose_the_parameter_server_and_replay_where_the_config_points(target):
    docs = render(target)
    roles = workloads(docs)
    config_env = env_of(docs, roles["worker"]["spec"]["template"]["spec"]["containers"][0])
    for role, service, address_var in (("parameter-server", "drlbox-parameter-server",
                                        "DRLBOX_PS_ADDRESS"),
                                       ("replay", "drlbox-replay", "DRLBOX_REPLAY_ADDRESS")):
        svc = find(docs, "Service", service)
        port = ROLE_PORTS[role]
        (sp,) = svc["spec"]["ports"]
        assert sp["port"] == port
        pod_labels = roles[role]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        (c,) = roles[role]["spec"]["template"]["spec"]["containers"]
        target_port = {p["name"]: p["containerPort"] for p in c["ports"]}.get(
            sp["targetPort"], sp["targetPort"])
        assert target_port == port
        assert config_env[address_var] == f"{service}:{port}"
    # Nothing but the parameter server and the replay server needs to be reachable.
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert services == {"drlbox-parameter-server", "drlbox-parameter-server-headless",
                        "drlbox-replay"}
