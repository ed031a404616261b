"""The Helm chart with a real helm: lint, render, every manifest against the
Kubernetes API schemas of each supported version, secure defaults, least-privilege
RBAC, and values the schema must refuse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainpool"
ALL_ON = Path(__file__).with_name("values-all.yaml")
# The chart's kubeVersion is >=1.30; the schemas kubernetes-validate ships go to 1.37.
VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]
CRDS = {"monitoring.coreos.com/v1"}

pytestmark = pytest.mark.integration  # a real helm binary


def _helm() -> str:
    found = shutil.which("helm", path=f"{ROOT / '.venv' / 'bin'}:{shutil.os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip("helm not installed: run .ci/setup.d/helm.sh (CI does)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_helm(), *args], capture_output=True, text=True, check=check, timeout=60)


def render(*extra: str) -> list[dict[str, Any]]:
    out = helm("template", "tp", str(CHART), "--namespace", "pool", *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def all_on() -> list[dict[str, Any]]:
    return render("-f", str(ALL_ON))


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict_with_defaults_and_with_every_feature_on() -> None:
    for extra in ([], ["-f", str(ALL_ON)]):
        result = helm("lint", "--strict", str(CHART), *extra, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("values", ["defaults", "all_on"])
def test_every_manifest_is_valid_for_every_supported_kubernetes_version(values: str, request) -> None:
    docs = request.getfixturevalue(values)
    checked = 0
    for doc in docs:
        if doc["apiVersion"] in CRDS:
            continue
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc.message} at {exc.path}"
                )
            checked += 1
    assert checked >= 9 * len(VERSIONS)


def test_defaults_run_one_sqlite_server_with_a_volume_and_an_agent_per_node(defaults) -> None:
    kinds = sorted(d["kind"] for d in defaults)
    assert "StatefulSet" in kinds and "Deployment" not in kinds and "DaemonSet" in kinds
    assert not any(d["apiVersion"] in CRDS for d in defaults)  # monitoring is opt-in
    sts = _kind(defaults, "StatefulSet")[0]
    assert (
        sts["spec"]["replicas"] == 1 and sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    )
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["server", "--db", "/var/lib/trainpool/trainpool.db"]
    assert "kubernetes" in args and "in-cluster" in args and "namespace=pool" in args
    assert "resources=huawei.com/Ascend910=ascend910,nvidia.com/gpu=nvidia-gpu" in args


def test_secure_defaults(defaults) -> None:
    pod = _kind(defaults, "StatefulSet")[0]["spec"]["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"]
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    server = pod["containers"][0]
    sc = server["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert server["resources"]["requests"] and server["resources"]["limits"]
    agent_pod = _kind(defaults, "DaemonSet")[0]["spec"]["template"]["spec"]
    agent = agent_pod["containers"][0]
    assert agent_pod["hostNetwork"] and not agent_pod["automountServiceAccountToken"]
    assert (
        "add" not in agent["securityContext"]["capabilities"]
        and agent["securityContext"]["readOnlyRootFilesystem"]
    )
    assert {t["key"] for t in agent_pod["tolerations"]} == {"nvidia.com/gpu", "huawei.com/Ascend910"}
    # Secrets are mounted readable by the pods' fsGroup (the containers are not root).
    for p in (pod, agent_pod):
        secrets = [v["secret"] for v in p["volumes"] if "secret" in v]
        assert (
            secrets
            and all(s["defaultMode"] == 0o440 for s in secrets)
            and p["securityContext"]["fsGroup"] == 10001
        )
    node_env = next(e for e in agent["env"] if e["name"] == "NODE_NAME")
    assert node_env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert agent["args"][agent["args"].index("--node") + 1] == "$(NODE_NAME)"


def test_metrics_are_scraped_with_their_own_token(defaults, all_on) -> None:
    secret = next(
        d for d in _kind(defaults, "Secret") if d["metadata"]["name"] == "tp-trainpool-metrics-token"
    )
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    server = _kind(defaults, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    env = next(e for e in server["env"] if e["name"] == "TRAINPOOL_METRICS_TOKEN")
    assert env["valueFrom"]["secretKeyRef"] == {"name": "tp-trainpool-metrics-token", "key": "token"}
    endpoint = _kind(all_on, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"]["key"] == "token"
    assert endpoint["authorization"]["credentials"]["name"].endswith("-metrics-token")


def test_rbac_grants_only_what_the_backend_calls(defaults) -> None:
    def rules(kind: str) -> set[tuple[str, str]]:
        return {
            (r, v)
            for role in _kind(defaults, kind)
            for rule in role["rules"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    assert rules("ClusterRole") == {("nodes", "get"), ("nodes", "list"), ("nodes", "watch"),
                                    ("nodes/status", "get"), ("nodes/status", "patch")}  # fmt: skip
    assert rules("Role") == {
        ("pods", "get"), ("pods", "list"), ("pods", "watch"), ("pods", "create"), ("pods", "delete"),
        ("pods/log", "get"), ("services", "get"), ("services", "create"), ("services", "delete"),
    }  # fmt: skip


def test_every_feature_on_renders_postgres_replicas_monitoring_and_dashboards(all_on) -> None:
    deploy = _kind(all_on, "Deployment")[0]
    assert deploy["spec"]["replicas"] == 2 and not _kind(all_on, "StatefulSet")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINPOOL_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "trainpool-db"
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "checkpoint_pvc=tp-trainpool-checkpoints" in args and "namespace=training" in args
    assert _kind(all_on, "Role")[0]["metadata"]["namespace"] == "training"
    pvc = _kind(all_on, "PersistentVolumeClaim")[0]
    assert pvc["metadata"]["namespace"] == "training" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # A claim in another namespace cannot be mounted by the server; the job pods mount it.
    assert all(v["name"] != "checkpoints" for v in deploy["spec"]["template"]["spec"]["volumes"])
    same_ns = render("--set", "checkpoints.existingClaim=ckpt")
    volumes = _kind(same_ns, "StatefulSet")[0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}} in volumes
    assert {d["kind"] for d in all_on if d["apiVersion"] in CRDS} == {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    }
    rule = _kind(all_on, "PrometheusRule")[0]
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "trainpool-rules.yaml").read_text())
    assert rule["spec"] == source and len(source["groups"]) >= 1
    boards = [
        d for d in _kind(all_on, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    generated = sorted(p.name for p in (ROOT / "deploy" / "grafana").glob("*.json"))
    assert sorted(k for b in boards for k in b["data"]) == generated and len(generated) >= 4
    assert all(b["metadata"]["namespace"] == "monitoring" for b in boards)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "server.port=http"], "at '/server/port': got string, want integer"),
        (["--set", "server.port=70000"], "at '/server/port': maximum"),
        (["--set", "serverr.port=1"], "additional properties 'serverr' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
        (["--set", "postgresql.enabled=true"], "at '/postgresql/existingSecret': minLength"),
        (["--set", "jobs.namespace=Bad_Name"], "at '/jobs/namespace': 'Bad_Name' does not match"),
        (["--set", "checkpoints.mountPath=relative/dir"], "at '/checkpoints/mountPath'"),
        (["--set", "server.replicas=3"], "server.replicas: more than one replica needs postgresql.enabled"),
        (["--kube-version", "1.29.0"], "kubeVersion"),
    ],
)
def test_wrong_values_are_refused_with_a_message_naming_them(args: list[str], message: str) -> None:
    result = helm("template", "tp", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_notes_tell_how_to_get_the_token_and_submit_a_job_that_validates() -> None:
    from values.domain import JobSpec

    out = helm("install", "tp", str(CHART), "--dry-run=client", "--namespace", "pool").stdout
    notes = out[out.index("NOTES:") :]
    assert (
        "kubectl -n pool get secret tp-trainpool-admin-token -o jsonpath='{.data.token}' | base64 -d" in notes
    )
    spec_text = notes.split("<<'YAML'\n", 1)[1].split("   YAML", 1)[0]
    spec = JobSpec.model_validate(yaml.safe_load("\n".join(line[3:] for line in spec_text.splitlines())))
    assert (spec.org, spec.gang.flavors) == ("research", ("nvidia-gpu",))  # the default pool's org and flavor
