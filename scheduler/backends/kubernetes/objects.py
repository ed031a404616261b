"""Pure translations between Kubernetes objects (plain dicts, as the API sends them)
and the pool's types: Node objects to inventory, a launch to its Service and pods.

No I/O here, so the rules are tested without an API server.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import PurePosixPath
from typing import Any

from scheduler.backends.base import Launch
from scheduler.backends.kubernetes.options import KubeOptions
from values.domain import Health, Node, TopologyPath
from values.names import NAME_PATTERN

Obj = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
JOB_LABEL = "trainpool.io/job"
ATTEMPT_LABEL = "trainpool.io/attempt"
RANK_LABEL = "trainpool.io/rank"
GANG_LABEL = "trainpool.io/gang"
KEY_ANNOTATION = "trainpool.io/key"
WORLD_ANNOTATION = "trainpool.io/world-size"
SELECTOR = f"{MANAGED_BY}=trainpool"
NETWORK_CONDITION = "TrainpoolNetworkHealthy"

_NAME = re.compile(NAME_PATTERN)


# --- nodes -> inventory ---------------------------------------------------------------


def node_of(obj: Obj, opts: KubeOptions, flavors: set[str]) -> tuple[Node | None, str]:
    """The pool's view of a Node object, or None and why it is not part of the pool."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    name = meta.get("name", "")
    if not _NAME.match(name):
        return None, f"node name '{name}' is longer than 63 characters or not a DNS name"
    labels = meta.get("labels") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    resource = next((r for r in opts.resources if r in allocatable), None)
    flavor = labels.get(opts.flavor_label) or opts.products.get(labels.get(opts.product_label, ""))
    if flavor is None and resource is not None:
        flavor = opts.resources[resource]
    if flavor is None:
        return None, "no accelerator resource and no flavor label"
    if flavors and flavor not in flavors:
        return None, f"flavor '{flavor}' is not defined in the pool config"
    count = int(quantity(allocatable.get(resource, "0"))) if resource else 0
    node = Node(
        name=name,
        flavor=flavor,
        accelerators=min(count, 64),
        cpu=quantity(allocatable.get("cpu", "0")),
        memory_gb=quantity(allocatable.get("memory", "0")) / 2**30,
        topology=TopologyPath(
            zone=_label_name(labels.get(opts.zone_label), "zone-a"),
            spine=_label_name(labels.get(opts.spine_label), "spine-0"),
            rack=_label_name(labels.get(opts.rack_label), "rack-0"),
            nvlink_domain=_label_name(labels.get(opts.nvlink_label), None),
        ),
        health=health_of(status.get("conditions") or []),
        cordoned=bool(spec.get("unschedulable")),
    )
    return node, ""


def accelerator_resource(obj: Obj, opts: KubeOptions) -> str | None:
    allocatable = (obj.get("status") or {}).get("allocatable") or {}
    return next((r for r in opts.resources if r in allocatable), None)


def health_of(conditions: list[Obj]) -> Health:
    """Ready (kubelet) and TrainpoolNetworkHealthy (agents' verdicts, or any other tool's)."""
    by_type = {c.get("type"): c for c in conditions}
    ready = by_type.get("Ready")
    if ready is not None and ready.get("status") != "True":
        return Health.UNHEALTHY
    if (by_type.get("NetworkUnavailable") or {}).get("status") == "True":
        return Health.UNHEALTHY
    net = by_type.get(NETWORK_CONDITION)
    if net is not None and net.get("status") == "False":
        return Health.DEGRADED if net.get("reason") == "Degraded" else Health.UNHEALTHY
    return Health.HEALTHY


def node_ready(obj: Obj | None) -> bool:
    if obj is None:
        return False
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return True  # a node without a Ready condition yet (just registered) is not lost


def network_condition(health: Health, message: str, now_iso: str, previous: Obj | None) -> Obj:
    status = "True" if health is Health.HEALTHY else "False"
    reason = {Health.HEALTHY: "Healthy", Health.DEGRADED: "Degraded", Health.UNHEALTHY: "Unhealthy"}[health]
    changed = previous is None or previous.get("status") != status
    return {
        "type": NETWORK_CONDITION,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastHeartbeatTime": now_iso,
        "lastTransitionTime": now_iso if changed else previous.get("lastTransitionTime", now_iso),  # type: ignore[union-attr]
    }


_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("8", "500m", "64Gi", "1e3") as a number."""
    s = str(text).strip()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(suffix) and s[: -len(suffix)]:
            try:
                return float(s[: -len(suffix)]) * _UNITS[suffix]
            except ValueError:
                return 0.0
    try:
        value = float(s)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _label_name(value: str | None, default: str | None) -> str | None:
    if not value:
        return default
    text = re.sub(r"[^a-z0-9._-]", "-", value.lower()).strip("-._")[:63].strip("-._")
    return text or default


# --- a launch -> Service and pods -----------------------------------------------------


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1035 label from a job id and suffixes: lower-case, dashes, starts with a
    letter; shortened with a hash when too long so distinct inputs stay distinct."""
    s = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = "tp-" + s
    if len(s) > limit:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        s = s[: limit - 9].rstrip("-") + "-" + digest
    return s


def service_name(job_id: str, attempt: int) -> str:
    return dns_label(f"tp-{job_id}-{attempt}")


def pod_name(job_id: str, attempt: int, rank: int) -> str:
    # The pod's hostname too, so it must be a label; the rank stays at the end.
    return dns_label(f"tp-{job_id}-{attempt}", 63 - len(str(rank)) - 1) + f"-{rank}"


def gang_label(job_id: str, attempt: int) -> str:
    return dns_label(f"{job_id}-{attempt}")


def labels_of(launch: Launch) -> dict[str, str]:
    return {
        MANAGED_BY: "trainpool",
        JOB_LABEL: dns_label(launch.job_id),
        ATTEMPT_LABEL: str(launch.attempt),
        GANG_LABEL: gang_label(launch.job_id, launch.attempt),
    }


def service_manifest(launch: Launch, namespace: str, opts: KubeOptions) -> Obj:
    """Headless, and publishing not-ready addresses: rank 0's name must resolve while
    the other ranks start, before anything is 'ready'."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(launch.job_id, launch.attempt),
            "namespace": namespace,
            "labels": labels_of(launch),
            "annotations": {KEY_ANNOTATION: launch.key, WORLD_ANNOTATION: str(world_size(launch))},
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {GANG_LABEL: gang_label(launch.job_id, launch.attempt)},
            "ports": [{"name": "rendezvous", "port": opts.master_port, "targetPort": opts.master_port}],
        },
    }


def world_size(launch: Launch) -> int:
    return sum(k for _, k in launch.assignments)


def master_addr(launch: Launch, namespace: str, opts: KubeOptions) -> str:
    svc = service_name(launch.job_id, launch.attempt)
    return f"{pod_name(launch.job_id, launch.attempt, 0)}.{svc}.{namespace}.svc.{opts.cluster_domain}"


def pod_manifests(
    launch: Launch,
    namespace: str,
    opts: KubeOptions,
    owner_uid: str,
    resource_of: dict[str, str | None],
    checkpoint_root: str,
) -> list[Obj]:
    """One pod per replica, in rank order, each pinned to its node by ``nodeName``."""
    spec, svc = launch.spec, service_name(launch.job_id, launch.attempt)
    world = world_size(launch)
    addr = master_addr(launch, namespace, opts)
    owner = {
        "apiVersion": "v1",
        "kind": "Service",
        "name": svc,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    root = PurePosixPath(checkpoint_root)
    mount = str(root if root.is_absolute() else PurePosixPath("/") / root)
    folder = launch.env.get("TRAINPOOL_CHECKPOINT_DIR") or str(PurePosixPath(mount) / launch.job_id)
    image = spec.image or opts.image
    tolerations = [{"key": r, "operator": "Exists"} for r in opts.resources]
    pods: list[Obj] = []
    rank = 0
    for node_rank, (node, replicas) in enumerate(launch.assignments):
        resource = resource_of.get(node)
        for local in range(replicas):
            env = {
                **spec.env,
                **launch.env,
                "RANK": str(rank),
                "WORLD_SIZE": str(world),
                "LOCAL_RANK": str(local),
                "LOCAL_WORLD_SIZE": str(replicas),
                "NODE_RANK": str(node_rank),
                "TRAINPOOL_NODE": node,
                "MASTER_ADDR": addr,
                "MASTER_PORT": str(opts.master_port),
            }
            requests: dict[str, str] = {"cpu": _cpu(spec.gang.cpu), "memory": _memory(spec.gang.memory_gb)}
            limits: dict[str, str] = {"memory": _memory(spec.gang.memory_gb)}
            if resource and spec.gang.accelerators:
                # The device plugin picks the devices and exposes only those to the
                # container, so no visibility variable is set here.
                requests[resource] = limits[resource] = str(spec.gang.accelerators)
            container: Obj = {
                "name": "train",
                "image": image,
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resources": {"requests": requests, "limits": limits},
            }
            if spec.command:
                container["command"] = list(spec.command)
            if not root.is_absolute():
                container["workingDir"] = "/"  # so the relative TRAINPOOL_CHECKPOINT_DIR resolves
            pod_spec: Obj = {
                "nodeName": node,
                "restartPolicy": "Never",
                "hostname": pod_name(launch.job_id, launch.attempt, rank),
                "subdomain": svc,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": math.ceil(spec.grace_period_seconds),
                "tolerations": tolerations,
                "containers": [container],
            }
            if opts.service_account:
                pod_spec["serviceAccountName"] = opts.service_account
            if opts.checkpoint_pvc:
                # Only the job's own folder of the shared volume: another org's checkpoints
                # are not in the pod at all (kubelet creates the folder on first use).
                container["volumeMounts"] = [
                    {"name": "checkpoints", "mountPath": folder, "subPath": launch.job_id}
                ]
                pod_spec["volumes"] = [
                    {"name": "checkpoints", "persistentVolumeClaim": {"claimName": opts.checkpoint_pvc}}
                ]
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod_name(launch.job_id, launch.attempt, rank),
                        "namespace": namespace,
                        "labels": {**labels_of(launch), RANK_LABEL: str(rank)},
                        "annotations": {KEY_ANNOTATION: launch.key, WORLD_ANNOTATION: str(world)},
                        "ownerReferences": [owner],
                    },
                    "spec": pod_spec,
                }
            )
            rank += 1
    return pods


def _cpu(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


def _memory(gb: float) -> str:
    return f"{max(1, round(gb * 1024))}Mi"
