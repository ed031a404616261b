"""The kubernetes backend against kmock's emulator, through the official client."""

from __future__ import annotations

import json
from pathlib import Path

import kmock
import pytest
from k8s_emulator import EmulatorThread
from k8s_support import NS, CoreApi, eventually

from scheduler.backends.base import BackendError, Launch, Phase
from scheduler.backends.kubernetes import KubernetesBackend
from scheduler.backends.kubernetes.options import KubeOptions
from scheduler.sdk import MANIFEST, progress_file
from values.domain import Health, JobSpec
from values.progress import RankReport

pytestmark = pytest.mark.integration


def _launch(
    job: str = "j-abc", attempt: int = 0, nodes: tuple[tuple[str, int], ...] = (("gpu-a", 1),), **spec: object
) -> Launch:
    gang = {"replicas": sum(k for _, k in nodes), "accelerators": 4, "flavor": "h100"}
    js = JobSpec.model_validate(
        {"name": "train", "org": "a", "gang": gang, "command": ["python", "train.py"], **spec}
    )
    env = {
        "TRAINPOOL_JOB_ID": job,
        "TRAINPOOL_ATTEMPT": str(attempt),
        "TRAINPOOL_CHECKPOINT_DIR": f"/ckpt/{job}",
    }
    return Launch(job_id=job, attempt=attempt, spec=js, flavor="h100", assignments=nodes, env=env)


def _phase(b: KubernetesBackend, key: str) -> Phase | None:
    return next((g.phase for g in b.gangs(0.0) if g.key == key), None)


def test_inventory_reads_flavor_count_topology_and_health_from_node_objects(
    api: CoreApi, make_backend
) -> None:
    api.add_node(
        "gpu-a",
        labels={
            "trainpool.io/rack": "R12",
            "trainpool.io/spine": "s1",
            "topology.kubernetes.io/zone": "eu-1a",
        },
    )
    api.add_node(
        "npu-a", gpus=16, resource="huawei.com/Ascend910", labels={"trainpool.io/flavor": "ascend910"}
    )
    api.add_node("gpu-cordoned", unschedulable=True)
    api.add_node("gpu-down", ready=False)
    api.create_node({"metadata": {"name": "cpu-only"}, "status": {"allocatable": {"cpu": "8"}}})
    api.add_node("mlu-a", labels={"trainpool.io/flavor": "mlu370"})  # not a flavor of this pool
    b = make_backend()
    nodes = {n.name: n for n in b.inventory(0.0)}
    assert sorted(nodes) == ["gpu-a", "gpu-cordoned", "gpu-down", "npu-a"]
    a = nodes["gpu-a"]
    assert (a.flavor, a.accelerators, a.cpu, round(a.memory_gb)) == ("h100", 8, 96.0, 1024)
    assert (a.topology.zone, a.topology.spine, a.topology.rack) == ("eu-1a", "s1", "r12")
    assert (nodes["npu-a"].flavor, nodes["npu-a"].accelerators) == ("ascend910", 16)
    assert nodes["gpu-cordoned"].cordoned and not a.cordoned
    assert nodes["gpu-down"].health is Health.UNHEALTHY and a.health is Health.HEALTHY

    # Watch-driven: a node going NotReady, and the agents' verdict as a node condition.
    api.set_ready("gpu-a", False)
    eventually(
        lambda: {n.name: n for n in b.inventory(0.0)}["gpu-a"].health is Health.UNHEALTHY,
        what="NotReady seen",
    )
    b.set_network_health("npu-a", Health.DEGRADED, "rack loss 3%")
    eventually(
        lambda: {n.name: n for n in b.inventory(0.0)}["npu-a"].health is Health.DEGRADED,
        what="condition seen",
    )
    conds = {c.type: c for c in api.read_node_status("npu-a").status.conditions}
    assert (
        conds["TrainpoolNetworkHealthy"].status == "False"
        and conds["TrainpoolNetworkHealthy"].reason == "Degraded"
    )
    assert conds["Ready"].status == "True"  # the other conditions are kept
    b.set_network_health("npu-a", Health.HEALTHY)
    eventually(
        lambda: {n.name: n for n in b.inventory(0.0)}["npu-a"].health is Health.HEALTHY, what="healthy again"
    )


def test_launch_makes_one_pod_per_replica_on_its_node_owned_by_a_headless_service(
    api: CoreApi, make_backend, cluster: EmulatorThread
) -> None:
    api.add_node("gpu-a")
    api.add_node("gpu-b")
    b = make_backend(checkpoint_pvc="ckpt")
    launch = _launch(nodes=(("gpu-a", 2), ("gpu-b", 1)))
    b.launch(launch, 0.0)
    svc = api.read_namespaced_service("tp-j-abc-0", NS)
    assert svc.spec.cluster_ip == "None" and svc.spec.publish_not_ready_addresses
    pods = api.pods()
    assert [p["metadata"]["name"] for p in pods] == ["tp-j-abc-0-0", "tp-j-abc-0-1", "tp-j-abc-0-2"]
    assert [p["spec"]["nodeName"] for p in pods] == ["gpu-a", "gpu-a", "gpu-b"]
    for rank, pod in enumerate(pods):
        owner = pod["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Service", "tp-j-abc-0", svc.metadata.uid)
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["RANK"] == str(rank) and env["WORLD_SIZE"] == "3"
        assert env["LOCAL_RANK"] == str([0, 1, 0][rank]) and env["NODE_RANK"] == str([0, 0, 1][rank])
        assert env["LOCAL_WORLD_SIZE"] == str([2, 2, 1][rank]) and "CUDA_VISIBLE_DEVICES" not in env
        assert env["MASTER_ADDR"] == "tp-j-abc-0-0.tp-j-abc-0.pool.svc.cluster.local"
        assert env["MASTER_PORT"] == "29500" and env["TRAINPOOL_JOB_ID"] == "j-abc"
        assert env["TRAINPOOL_NODE"] == pod["spec"]["nodeName"]
        assert pod["spec"]["subdomain"] == "tp-j-abc-0" and pod["spec"]["hostname"] == f"tp-j-abc-0-{rank}"
        res = pod["spec"]["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == "4" and pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ckpt"
        # The shared volume's own folder only, where the job is told to write: no other
        # org's checkpoints are in the pod.
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert mounts == [{"name": "checkpoints", "mountPath": "/ckpt/j-abc", "subPath": "j-abc"}]
        assert pod["spec"]["containers"][0]["command"] == ["python", "train.py"]
    assert _phase(b, launch.key) is Phase.STARTING

    # Idempotent by key: a second launch creates nothing.
    creates = sum(1 for r in cluster.requests() if r.action == kmock.action.CREATE)
    b.launch(launch, 1.0)
    assert sum(1 for r in cluster.requests() if r.action == kmock.action.CREATE) == creates

    for p in pods:
        api.run_pod(p["metadata"]["name"])
    eventually(lambda: _phase(b, launch.key) is Phase.RUNNING, what="RUNNING")
    for p in pods:
        api.exit_pod(p["metadata"]["name"], 0)
    eventually(lambda: _phase(b, launch.key) is Phase.SUCCEEDED, what="SUCCEEDED")

    b.forget(launch.key)
    assert api.pods() == [] and api.services() == []
    assert _phase(b, launch.key) is None


def test_a_jobs_own_image_runs_its_pods_and_other_jobs_get_the_backends_image(
    api: CoreApi, make_backend
) -> None:
    api.add_node("gpu-a")
    api.add_node("gpu-b")
    b = make_backend(image="registry.example.com/base:1")
    own = _launch("j-own", nodes=(("gpu-a", 1), ("gpu-b", 1)), image="nvcr.io/nvidia/pytorch:24.05-py3")
    default = _launch("j-default", nodes=(("gpu-a", 1),))
    b.launch(own, 0.0)
    b.launch(default, 0.0)
    images = {p["metadata"]["name"]: [c["image"] for c in p["spec"]["containers"]] for p in api.pods()}
    assert images == {
        "tp-j-own-0-0": ["nvcr.io/nvidia/pytorch:24.05-py3"],
        "tp-j-own-0-1": ["nvcr.io/nvidia/pytorch:24.05-py3"],
        "tp-j-default-0-0": ["registry.example.com/base:1"],
    }


def test_a_launch_retried_by_a_restarted_server_meets_409_and_adopts_the_gang(
    api: CoreApi, make_backend
) -> None:
    api.add_node("gpu-a")
    first = make_backend()
    launch = _launch(nodes=(("gpu-a", 2),))
    first.launch(launch, 0.0)
    first.close()
    second = make_backend()  # knows nothing; the pods and the Service exist (409 Conflict)
    second.launch(launch, 1.0)
    assert len(api.pods()) == 2 and api.services() == ["tp-j-abc-0"]
    assert _phase(second, launch.key) is Phase.STARTING
    assert second.launch(launch, 2.0) is None and len(api.pods()) == 2  # and again: still nothing new


def test_failures_are_told_apart_exit_code_eviction_node_loss_and_foreign_deletion(
    api: CoreApi, make_backend
) -> None:
    for n in ("gpu-a", "gpu-b", "gpu-c", "gpu-d"):
        api.add_node(n)
    b = make_backend()
    pairs = (("f", "gpu-a"), ("e", "gpu-b"), ("n", "gpu-c"), ("d", "gpu-d"))
    failed, evicted, nodeloss, deleted = (_launch(job=f"j-{x}", nodes=((n, 1),)) for x, n in pairs)
    for launch in (failed, evicted, nodeloss, deleted):
        b.launch(launch, 0.0)
        api.run_pod(f"tp-{launch.job_id}-0-0")
    api.exit_pod("tp-j-f-0-0", 3)
    api.evict_pod("tp-j-e-0-0")
    api.set_ready("gpu-c", False)
    api.delete_namespaced_pod("tp-j-d-0-0", NS)

    def statuses(now: float = 5.0) -> dict[str, object]:
        return {g.job_id: g for g in b.gangs(now)}

    eventually(lambda: all(g.phase is Phase.LOST for j, g in statuses().items() if j != "j-f"), what="lost")
    # The exit is held for the correlation window: a node loss seen inside it would make
    # the failure the infrastructure's, not the job's.
    assert statuses()["j-f"].phase is Phase.RUNNING
    eventually(lambda: statuses(5.0 + b.correlation_window)["j-f"].phase is Phase.FAILED, what="failed")
    st = statuses(5.0 + b.correlation_window)
    assert (st["j-f"].phase, st["j-f"].exit_code, st["j-f"].node) == (Phase.FAILED, 3, "gpu-a")
    assert (st["j-e"].phase, st["j-e"].node) == (Phase.LOST, "gpu-b") and "Evicted" in st["j-e"].message
    assert (st["j-n"].phase, st["j-n"].node) == (Phase.LOST, "gpu-c")
    assert st["j-d"].phase is Phase.LOST and "outside trainpool" in st["j-d"].message
    assert all(g.at == 5.0 for g in st.values())  # when the backend first saw the end


def test_stop_deletes_with_the_grace_period_and_reports_stopped(
    api: CoreApi, make_backend, cluster: EmulatorThread
) -> None:
    api.add_node("gpu-a")
    b = make_backend()
    launch = _launch(nodes=(("gpu-a", 2),), grace_period_seconds=45)
    b.launch(launch, 0.0)
    assert api.pods()[0]["spec"]["terminationGracePeriodSeconds"] == 45
    b.stop(launch.key, 45.0, 1.0)
    deletes = [
        r for r in cluster.requests() if r.action == kmock.action.DELETE and r.resource.plural == "pods"
    ]
    assert len(deletes) == 2 and all(r.params.get("gracePeriodSeconds") == "45" for r in deletes)
    eventually(lambda: _phase(b, launch.key) is Phase.STOPPED, what="STOPPED")  # deleted by us: not LOST
    b.stop("nobody/0", 1.0, 1.0)  # unknown keys are ignored


def test_an_expired_watch_relists_and_sees_what_it_missed(
    api: CoreApi, make_backend, cluster: EmulatorThread
) -> None:
    api.add_node("gpu-a")
    b = make_backend()
    launch = _launch()
    b.launch(launch, 0.0)
    api.run_pod("tp-j-abc-0-0")
    eventually(lambda: _phase(b, launch.key) is Phase.RUNNING, what="RUNNING")
    em = cluster.emulator
    cluster.call(lambda: setattr(em, "paused", True))  # the watch hears nothing from now on
    api.delete_namespaced_pod("tp-j-abc-0-0", NS)
    api.add_node("gpu-new")
    assert _phase(b, launch.key) is Phase.RUNNING  # not seen yet
    relists = b.pod_reflector.relists

    def compact() -> None:  # history gone, and every open watch ends (apiserver restart)
        em.floor, em.generation, em.paused = em.rv + 1, em.generation + 1, False

    cluster.call(compact)
    eventually(lambda: b.pod_reflector.relists > relists, what="pod re-list after 410")
    eventually(lambda: _phase(b, launch.key) is Phase.LOST, what="the deletion found by the re-list")
    eventually(lambda: "gpu-new" in {n.name for n in b.inventory(0.0)}, what="node re-list")
    assert b.node_reflector.relists >= 1


def test_launch_on_an_unknown_node_or_a_refused_create_is_a_backend_error_and_leaves_nothing(
    api: CoreApi, make_backend, cluster: EmulatorThread
) -> None:
    api.add_node("gpu-a")
    b = make_backend()
    with pytest.raises(BackendError, match="not in the cluster"):
        b.launch(_launch(nodes=(("gpu-zz", 1),)), 0.0)
    # The second pod's name is taken by another gang's pod: refused, and the first pod
    # and the Service made for this launch are removed again; the other pod stays.
    meta = {"name": "tp-j-abc-0-1", "annotations": {"trainpool.io/key": "x/0"}}
    api.create_namespaced_pod(NS, {"metadata": meta, "spec": {"containers": [{"name": "x", "image": "x"}]}})
    with pytest.raises(BackendError, match="does not belong"):
        b.launch(_launch(nodes=(("gpu-a", 2),)), 0.0)
    assert [p["metadata"]["name"] for p in api.pods()] == ["tp-j-abc-0-1"] and api.services() == []


def test_logs_come_from_each_replicas_pod(api: CoreApi, make_backend, cluster: EmulatorThread) -> None:
    api.add_node("gpu-a")
    b = make_backend()
    launch = _launch(nodes=(("gpu-a", 2),))
    b.launch(launch, 0.0)
    for rank in (0, 1):
        path = f"get /api/v1/namespaces/{NS}/pods/tp-j-abc-0-{rank}/log"
        cluster.call(
            lambda p=path, r=rank: cluster.emulator[p] << f"step 1 rank {r}\nstep 2 rank {r}\n".encode()
        )
    assert b.logs(launch.key, 10, 0.0) == ["[0] step 1 rank 0", "[0] step 2 rank 0", "[1] step 1 rank 1",
                                           "[1] step 2 rank 1"]  # fmt: skip
    assert b.logs(launch.key, 1, 0.0, replica=1) == ["step 2 rank 1"]
    assert b.logs("j-unknown/0", 10, 0.0) is None


def test_an_api_that_refuses_the_lists_fails_the_cycle_with_the_reason(
    api: CoreApi, cluster: EmulatorThread
) -> None:
    cluster.call(
        lambda: cluster.emulator["get /api/v1/nodes"] << kmock.KubernetesError(403, "Forbidden", "rbac")
    )
    b = KubernetesBackend(api, KubeOptions(watch_seconds=2, sync_seconds=1.0), namespace=NS)
    try:
        with pytest.raises(BackendError, match="nodes: 403 Forbidden"):
            b.inventory(0.0)
    finally:
        b.close()


def test_checkpoints_and_progress_come_from_the_jobs_folder_on_the_shared_volume(
    api: CoreApi, make_backend, tmp_path: Path
) -> None:
    """The pods write beside their checkpoints through the SDK; the server mounts the same
    volume at its checkpoint root and reads them there: no credentials in the job."""
    api.add_node("gpu-a")
    api.add_node("gpu-b")
    b = make_backend(checkpoint_root=str(tmp_path), checkpoint_pvc="ckpt")
    launch = _launch(nodes=(("gpu-a", 1), ("gpu-b", 1)))
    b.launch(launch, 0.0)
    folder = tmp_path / "j-abc"
    # What ranks 0 and 1 of attempt 0 wrote (sdk.report_checkpoint, sdk.report_progress).
    for rank in (0, 1):
        progress_file(folder, rank).parent.mkdir(parents=True, exist_ok=True)
        record = {"attempt": 0, "rank": rank, "step": 40 + rank, "step_seconds": 0.5 * (1 + rank), "at": 1.0}
        progress_file(folder, rank).write_text(json.dumps(record))
    (folder / MANIFEST).write_text(json.dumps({"step": 39, "path": str(folder / "step-39.pt")}))
    for p in api.pods():
        api.run_pod(p["metadata"]["name"])
    eventually(lambda: _phase(b, launch.key) is Phase.RUNNING, what="RUNNING")
    (st,) = b.gangs(0.0)
    assert st.checkpoint == (39, str(folder / "step-39.pt"))
    assert st.progress == (RankReport(0, 40, 0.5, "gpu-a"), RankReport(1, 41, 1.0, "gpu-b"))
    # A save in the stop's grace period is read once more when the gang has ended.
    (folder / MANIFEST).write_text(json.dumps({"step": 44, "path": str(folder / "step-44.pt")}))
    for p in api.pods():
        api.exit_pod(p["metadata"]["name"], 0)
    eventually(lambda: _phase(b, launch.key) is Phase.SUCCEEDED, what="SUCCEEDED")
    (st,) = b.gangs(0.0)
    assert st.checkpoint == (44, str(folder / "step-44.pt"))
