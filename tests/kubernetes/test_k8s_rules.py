"""The backend's pure rules: pod outcomes to gang phases, names, quantities, options."""

from __future__ import annotations

import pytest

from scheduler.backends.gang_phase import ReplicaState
from scheduler.backends.kubernetes.objects import dns_label, pod_name, quantity, service_name
from scheduler.backends.kubernetes.options import OptionError, parse_options
from scheduler.backends.kubernetes.status import pod_verdict, replica_of


def _pod(
    phase: str, *, reason: str = "", code: int | None = None, deleting: bool = False, node: str = "n1"
) -> dict:
    status: dict = {"phase": phase, "reason": reason}
    if code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"exitCode": code, "reason": "Error"}}}]
    meta = {"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}
    return {"metadata": meta, "spec": {"nodeName": node}, "status": status}


def _waiting(reason: str) -> dict:
    pod = _pod("Pending")
    pod["status"]["containerStatuses"] = [
        {"state": {"waiting": {"reason": reason, "message": "no such image"}}}
    ]
    return pod


@pytest.mark.parametrize(
    ("pod", "gone", "node_ok", "ours", "state"),
    [
        (_pod("Pending"), False, True, False, "pending"),
        (_pod("Running"), False, True, False, "running"),
        (_pod("Running"), False, False, False, "lost"),  # its node is NotReady or gone
        (_pod("Unknown"), False, True, False, "lost"),
        (_pod("Succeeded"), False, True, False, "succeeded"),
        (_pod("Failed", code=2), False, True, False, "failed"),
        (_pod("Failed", reason="Evicted"), False, True, False, "lost"),
        (_pod("Failed", reason="OutOfnvidia.com/gpu"), False, True, False, "lost"),  # kubelet admission
        (_pod("Running", deleting=True), False, True, False, "lost"),  # someone else deletes it
        (_pod("Running", deleting=True), False, True, True, "running"),  # we do: it is stopping
        (None, True, True, False, "lost"),
        (None, True, True, True, "gone"),
        (None, False, True, False, "pending"),  # created, not yet seen by the watch
        (_waiting("ImagePullBackOff"), False, True, False, "failed"),  # the job's image is wrong
        (_waiting("ErrImagePull"), False, True, False, "pending"),  # may be a registry hiccup
    ],
)
def test_a_pod_outcome_is_the_jobs_or_the_infrastructures(pod, gone, node_ok, ours, state) -> None:
    assert pod_verdict(pod, gone=gone, node_ok=node_ok, ours_deleting=ours).state == state


def test_a_pod_becomes_a_replica_the_gang_rule_reads() -> None:
    def replica(pod, *, gone=False, ours=False):
        return replica_of(3, pod_verdict(pod, gone=gone, node_ok=True, ours_deleting=ours), at=5.0)

    failed = replica(_pod("Failed", code=7, node="n4"))
    assert (failed.state, failed.exit_code, failed.node, failed.rank) == (ReplicaState.EXITED, 7, "n4", 3)
    assert replica(_pod("Succeeded")).exit_code == 0
    assert replica(_pod("Failed", reason="Evicted")).state is ReplicaState.LOST
    assert replica(_pod("Running")).state is ReplicaState.RUNNING
    assert replica(None, gone=True, ours=True).gone  # deleted on our request
    assert replica(_waiting("ImagePullBackOff")).failed  # cannot start: the job's own failure


def test_names_are_dns_labels_and_stay_distinct_when_shortened() -> None:
    long = "j-" + "x" * 80
    assert len(service_name(long, 3)) <= 63 and service_name(long, 3) != service_name(long, 4)
    assert len(pod_name(long, 0, 4095)) <= 63 and pod_name(long, 0, 4095).endswith("-4095")
    assert dns_label("9.Job_A") == "tp-9-job-a"
    assert (quantity("500m"), quantity("64Gi"), quantity("8"), quantity("1e3"), quantity("junk")) == (
        0.5, 64 * 2**30, 8.0, 1000.0, 0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"namepsace": "x"}, "namepsace: not an option"),
        ({"master_port": "http"}, "master_port: 'http' is not a whole number"),
        ({"master_port": "70000"}, "master_port: 70000 is outside"),
        ({"resources": "nvidia.com/gpu"}, "resources: 'nvidia.com/gpu' is not NAME=FLAVOR"),
        ({"namespace": "Bad_NS"}, "namespace: 'Bad_NS' is not a valid Kubernetes name"),
        ({"image": "Train Image"}, "image: 'Train Image' is not a container image reference"),
    ],
)
def test_wrong_options_name_the_option(raw: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parse_options(raw)


def test_options_parse() -> None:
    opts = parse_options(
        {"resources": "nvidia.com/gpu=h100,cambricon.com/mlu=mlu370", "checkpoint_pvc": "ckpt"}
    )
    assert (
        opts.resources == {"nvidia.com/gpu": "h100", "cambricon.com/mlu": "mlu370"}
        and opts.checkpoint_pvc == "ckpt"
    )


def test_the_server_builds_the_backend_or_says_what_is_wrong(tmp_path) -> None:
    from scheduler.backends.base import BackendError
    from scheduler.backends.registry import BackendSettings, build_backend
    from scheduler.config import PoolConfig

    config = PoolConfig.model_validate({"flavors": [{"name": "h100"}], "orgs": [{"name": "a"}]})
    with pytest.raises(BackendError, match="kubeconfig '/nowhere' does not exist"):
        build_backend("kubernetes", BackendSettings(config=config, address="/nowhere"))
    with pytest.raises(BackendError, match="not running in a pod"):
        build_backend("kubernetes", BackendSettings(config=config, address="in-cluster"))
    with pytest.raises(BackendError, match="master_port: 'x' is not a whole number"):
        build_backend(
            "kubernetes", BackendSettings(config=config, address="/nowhere", options={"master_port": "x"})
        )
