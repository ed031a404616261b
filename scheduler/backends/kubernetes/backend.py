"""The ``kubernetes`` backend: Node objects are the inventory; a gang is one pod per
replica pinned to its node, plus a headless Service that owns the pods.

Placement: pods carry ``spec.nodeName``. The core already chose the nodes, and a pod
with a node name never passes through a scheduler: one API call per replica instead
of a create and a Binding, no second scheduler to register, and no window in which
kube-scheduler could place the pod elsewhere. The kubelet still admits the pod
(extended resources, memory), and a refusal (``OutOfnvidia.com/gpu``...) is reported
as LOST, the infrastructure's failure.

Reads come from two watch-fed mirrors (nodes, the pool's pods); writes (create,
delete, status patch) are synchronous API calls made by the loop when it acts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

from scheduler.backends.base import FINISHED, BackendError, GangStatus, Launch, Phase
from scheduler.backends.folder_reports import FolderReader
from scheduler.backends.gang_phase import status_of
from scheduler.backends.kubernetes import objects as k8s
from scheduler.backends.kubernetes.options import KubeOptions
from scheduler.backends.kubernetes.status import pod_verdict, replica_of
from scheduler.backends.kubernetes.watch import Mirror, Reflector
from scheduler.checkpoint_folder import job_folder
from values.domain import Health, Node

log = logging.getLogger(__name__)

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class _Gang:
    key: str
    job_id: str
    attempt: int
    pods: list[str]  # in rank order
    # Rebuilt from pods found in the cluster (after a server restart), not launched here:
    # then a missing pod means lost, not "not created yet".
    adopted: bool = False
    stop_requested_at: float | None = None
    stop_incomplete: bool = False  # some delete failed; report not-STOPPING so the loop asks again
    # Each pod's state as last seen and since when: a replica's time is when it was
    # first seen so, which is what the correlation window counts from.
    since: dict[str, tuple[str, float]] = field(default_factory=dict)
    # The job's checkpoint folder as this server sees it (the shared volume it mounts):
    # what the code reported there through the SDK. None: no folder to read.
    reports: FolderReader | None = None
    final_read: bool = False  # read once more when the gang ended: a grace-period save

    def seen_since(self, pod: str, state: str, now: float) -> float:
        seen = self.since.get(pod)
        if seen is None or seen[0] != state:
            self.since[pod] = seen = (state, now)
        return seen[1]


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        api: client.CoreV1Api,
        options: KubeOptions,
        *,
        namespace: str,
        flavors: set[str] | None = None,
        checkpoint_root: str = "checkpoints",
    ) -> None:
        self.api, self.opts, self.namespace = api, options, namespace
        self.correlation_window = options.correlation_window
        self.flavors = flavors or set()
        self.checkpoint_root = checkpoint_root
        self.nodes, self.pods = Mirror(), Mirror()
        self._lock = threading.Lock()
        self._gangs: dict[str, _Gang] = {}
        self._forgotten: OrderedDict[str, None] = OrderedDict()
        self._skipped: set[str] = set()  # nodes already warned about
        self.node_reflector = Reflector(
            "nodes", api.list_node, self.nodes, watch_seconds=options.watch_seconds
        )
        self.pod_reflector = Reflector(
            "pods", api.list_namespaced_pod, self.pods, watch_seconds=options.watch_seconds,
            kwargs={"namespace": namespace, "label_selector": k8s.SELECTOR},
        )  # fmt: skip
        self.node_reflector.start()
        self.pod_reflector.start()

    # --- the Backend protocol ------------------------------------------------------
    def inventory(self, now: float) -> list[Node]:
        self._wait_synced()
        objs, _ = self.nodes.snapshot()
        out: list[Node] = []
        for name, obj in sorted(objs.items()):
            node, why = k8s.node_of(obj, self.opts, self.flavors)
            if node is None:
                if name not in self._skipped:
                    self._skipped.add(name)
                    log.info("node %s is not part of the pool: %s", name, why)
                continue
            out.append(node)
        return out

    def gangs(self, now: float) -> list[GangStatus]:
        self._wait_synced()
        pods, deleted = self.pods.snapshot()
        nodes, _ = self.nodes.snapshot()
        with self._lock:
            self._adopt(pods, now)
            out = []
            for g in self._gangs.values():
                stopping = g.stop_requested_at is not None
                verdicts = [
                    pod_verdict(
                        pods.get(name),
                        gone=name in deleted,
                        node_ok=k8s.node_ready(
                            nodes.get((pods.get(name) or {}).get("spec", {}).get("nodeName", ""))
                        ),
                        ours_deleting=g.stop_requested_at is not None,
                    )
                    for name in g.pods
                ]
                if g.adopted:  # a pod missing from a cluster we found the gang in was deleted
                    verdicts = [
                        v if not (v.state == "pending" and name not in pods) else
                        pod_verdict(None, gone=True, node_ok=True, ours_deleting=stopping)
                        for v, name in zip(verdicts, g.pods, strict=True)
                    ]  # fmt: skip
                reps = [
                    replica_of(rank, v, g.seen_since(name, v.state, now))
                    for rank, (name, v) in enumerate(zip(g.pods, verdicts, strict=True))
                ]
                st = status_of(
                    g.key, g.job_id, g.attempt, reps, stop_requested_at=g.stop_requested_at, now=now,
                    window=self.correlation_window,
                )  # fmt: skip
                if st.phase is Phase.STOPPING and g.stop_incomplete:
                    st = replace(st, phase=Phase.RUNNING)  # so the loop calls stop() again
                out.append(self._with_reports(g, st, pods))
            return out

    def _reader(self, job_id: str, attempt: int) -> FolderReader:
        return FolderReader(job_folder(self.checkpoint_root, job_id), attempt)

    @staticmethod
    def _with_reports(g: _Gang, st: GangStatus, pods: dict[str, Any]) -> GangStatus:
        """``st`` with the checkpoint and progress the gang's code wrote to its folder."""
        if g.reports is None or st.phase is Phase.STARTING:
            return st
        last = st.phase in FINISHED and not g.final_read
        g.final_read = g.final_read or last
        nodes = [(pods.get(name) or {}).get("spec", {}).get("nodeName") for name in g.pods]
        g.reports.read(nodes, force=last)
        return replace(st, checkpoint=g.reports.checkpoint, progress=g.reports.progress)

    def launch(self, launch: Launch, now: float) -> None:
        with self._lock:
            if launch.key in self._gangs:
                return
        self._wait_synced()
        nodes, _ = self.nodes.snapshot()
        resource_of: dict[str, str | None] = {}
        for node, _ in launch.assignments:
            if node not in nodes:
                raise BackendError(f"node '{node}' is not in the cluster")
            resource_of[node] = k8s.accelerator_resource(nodes[node], self.opts)
        svc = k8s.service_manifest(launch, self.namespace, self.opts)
        created: list[str] = []
        try:
            owner = self._create_service(svc, launch.key)
            for pod in k8s.pod_manifests(
                launch, self.namespace, self.opts, owner, resource_of, self.checkpoint_root
            ):
                self._create_pod(pod, launch.key)
                created.append(pod["metadata"]["name"])
        except Exception as exc:
            # Nothing half-made stays behind: the loop retries the job as a new attempt.
            self._delete_quietly(created, svc["metadata"]["name"], owned_by=launch.key)
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, client.ApiException):
                raise BackendError(f"kubernetes refused the gang: {exc.status} {exc.reason}") from None
            raise BackendError(f"kubernetes API unreachable: {exc}") from None
        with self._lock:
            self._forgotten.pop(launch.key, None)
            self._gangs[launch.key] = _Gang(
                launch.key,
                launch.job_id,
                launch.attempt,
                created,
                reports=self._reader(launch.job_id, launch.attempt),
            )

    def stop(self, key: str, grace_seconds: float, now: float) -> None:
        with self._lock:
            g = self._gangs.get(key)
            if g is None:
                return
            if g.stop_requested_at is None:
                g.stop_requested_at = now
            pods = list(g.pods)
        failed = False
        for name in pods:
            try:
                self.api.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=math.ceil(grace_seconds), _request_timeout=15
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    failed = True
                    log.warning("could not delete pod %s: %s %s", name, exc.status, exc.reason)
            except Exception as exc:
                failed = True
                log.warning("could not delete pod %s: %s", name, exc)
        with self._lock:
            g.stop_incomplete = failed

    def forget(self, key: str) -> None:
        with self._lock:
            g = self._gangs.pop(key, None)
            self._forgotten[key] = None
            while len(self._forgotten) > 10_000:
                self._forgotten.popitem(last=False)
        if g is None:
            return
        # The Service owns the pods, so on a real cluster deleting it is enough; the pods
        # are deleted too, so that clean-up does not wait for the garbage collector.
        self._delete_quietly(g.pods, k8s.service_name(g.job_id, g.attempt))
        self.pods.forget(g.pods)

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        with self._lock:
            g = self._gangs.get(key)
            pods = list(g.pods) if g is not None else None
        if pods is None:
            return None
        lines: list[str] = []
        for rank, name in enumerate(pods):
            if replica is not None and rank != replica:
                continue
            try:
                resp = self.api.read_namespaced_pod_log(
                    name, self.namespace, tail_lines=tail, _preload_content=False, _request_timeout=10
                )
                text = getattr(resp, "data", b"").decode("utf-8", "replace")  # raw: any content type
            except Exception as exc:
                lines.append(f"[{rank}] (no logs: {exc})" if replica is None else f"(no logs: {exc})")
                continue
            for line in str(text).splitlines()[-tail:]:
                lines.append(line if replica is not None else f"[{rank}] {line}")
        return lines[-tail:]

    def close(self) -> None:
        for r in (self.node_reflector, self.pod_reflector):
            r.stop()
        for r in (self.node_reflector, self.pod_reflector):
            r.join(1.0)

    # --- beyond the protocol -------------------------------------------------------
    def set_network_health(self, node: str, health: Health, message: str = "") -> None:
        """Publish an agents' verdict as the Node condition TrainpoolNetworkHealthy
        (True when healthy; False with reason Degraded or Unhealthy), so that other
        tools (kubectl, node problem dashboards, descheduler) see it. Raises BackendError."""
        now_iso = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            current = _raw(self.api.read_node_status(node, _preload_content=False, _request_timeout=10))
            conditions = list((current.get("status") or {}).get("conditions") or [])
            previous = next((c for c in conditions if c.get("type") == k8s.NETWORK_CONDITION), None)
            cond = k8s.network_condition(health, message, now_iso, previous)
            conditions = [c for c in conditions if c.get("type") != k8s.NETWORK_CONDITION] + [cond]
            # The whole list: a strategic merge keys it by type on a real apiserver, and
            # simpler servers that replace lists still keep the other conditions.
            self.api.patch_node_status(node, {"status": {"conditions": conditions}}, _request_timeout=10)
        except client.ApiException as exc:
            raise BackendError(
                f"could not set {k8s.NETWORK_CONDITION} on node {node}: {exc.status} {exc.reason}"
            ) from None

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(m.synced.wait(max(0.0, deadline - time.monotonic())) for m in (self.nodes, self.pods))

    # --- internals -----------------------------------------------------------------
    def _wait_synced(self) -> None:
        if not self.wait_synced(self.opts.sync_seconds):
            errors = "; ".join(
                f"{r.name}: {r.last_error}" for r in (self.node_reflector, self.pod_reflector) if r.last_error
            )
            raise BackendError(f"kubernetes: nodes and pods not listed yet ({errors or 'no answer yet'})")

    def _adopt(self, pods: dict[str, Any], now: float) -> None:
        """Gangs whose pods exist but that this process did not launch: a previous
        server's. Reported like any other, so the loop resumes or stops them."""
        found: dict[str, dict[int, tuple[str, Any]]] = {}
        for name, pod in pods.items():
            ann = (pod.get("metadata") or {}).get("annotations") or {}
            key = ann.get(k8s.KEY_ANNOTATION)
            if not key or key in self._gangs or key in self._forgotten:
                continue
            rank = int(((pod.get("metadata") or {}).get("labels") or {}).get(k8s.RANK_LABEL, "0"))
            found.setdefault(key, {})[rank] = (name, pod)
        for key, ranks in found.items():
            job_id, _, attempt_text = key.rpartition("/")
            try:
                attempt = int(attempt_text)
                world = int(next(iter(ranks.values()))[1]["metadata"]["annotations"][k8s.WORLD_ANNOTATION])
            except (ValueError, KeyError):
                continue
            names = [k8s.pod_name(job_id, attempt, r) for r in range(world)]
            g = _Gang(key, job_id, attempt, names, adopted=True, reports=self._reader(job_id, attempt))
            if any((p.get("metadata") or {}).get("deletionTimestamp") for _, p in ranks.values()):
                g.stop_requested_at = now  # most likely our own stop, from before the restart
            self._gangs[key] = g
            log.info("adopted gang %s (%d of %d pods present)", key, len(ranks), world)

    def _create_service(self, svc: dict[str, Any], key: str) -> str:
        body = self._create_or_adopt("service", svc, key, self.api.create_namespaced_service,
                                     self.api.read_namespaced_service)  # fmt: skip
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            raise BackendError(f"service {svc['metadata']['name']} has no uid")
        return str(uid)

    def _create_pod(self, pod: dict[str, Any], key: str) -> None:
        body = self._create_or_adopt("pod", pod, key, self.api.create_namespaced_pod,
                                     self.api.read_namespaced_pod)  # fmt: skip
        self.pods.upsert(body)  # seen now: a later absence means deleted, not "not yet watched"

    def _create_or_adopt(
        self, kind: str, obj: dict[str, Any], key: str, create: Any, read: Any
    ) -> dict[str, Any]:
        """Create ``obj``; on 409 take the existing one if it is this gang's (a retried
        launch: idempotent by key), else refuse: it is someone else's."""
        name = obj["metadata"]["name"]
        try:
            made = create(self.namespace, _body(obj), _preload_content=False, _request_timeout=15)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            made = read(name, self.namespace, _preload_content=False, _request_timeout=15)
        body = _raw(made)
        if ((body.get("metadata") or {}).get("annotations") or {}).get(k8s.KEY_ANNOTATION) != key:
            raise BackendError(f"{kind} {name} exists and does not belong to gang {key}")
        return body

    def _delete_quietly(self, pods: list[str], service: str, owned_by: str | None = None) -> None:
        if owned_by is not None and not self._service_is(service, owned_by):
            service = ""  # someone else's Service of the same name: leave it
        for name in pods:
            try:
                self.api.delete_namespaced_pod(
                    name, self.namespace, grace_period_seconds=0, _request_timeout=15
                )
            except Exception as exc:
                if not (isinstance(exc, client.ApiException) and exc.status == 404):
                    log.warning("could not delete pod %s: %s", name, exc)
        if not service:
            return
        try:
            self.api.delete_namespaced_service(
                service, self.namespace, propagation_policy="Background", _request_timeout=15
            )
        except Exception as exc:
            if not (isinstance(exc, client.ApiException) and exc.status == 404):
                log.warning("could not delete service %s: %s", service, exc)

    def _service_is(self, name: str, key: str) -> bool:
        try:
            body = _raw(self.api.read_namespaced_service(name, self.namespace, _preload_content=False))
        except Exception:
            return False
        return bool(((body.get("metadata") or {}).get("annotations") or {}).get(k8s.KEY_ANNOTATION) == key)


def api_client(address: str | None) -> client.ApiClient:
    """``in-cluster`` (the pod's service account) or a kubeconfig path (its current context)."""
    if address in (None, "", "in-cluster"):
        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            raise BackendError(
                f"--address in-cluster: not running in a pod with a service account ({exc})"
            ) from None
        return client.ApiClient()
    path = Path(address).expanduser()
    if not path.is_file():
        raise BackendError(f"--address: kubeconfig '{address}' does not exist (or use --address in-cluster)")
    try:
        return config.new_client_from_config(config_file=str(path))
    except (config.ConfigException, OSError, ValueError) as exc:
        raise BackendError(f"--address: kubeconfig '{address}' is not usable: {exc}") from None


def default_namespace(address: str | None) -> str:
    if address in (None, "", "in-cluster") and _SA_NAMESPACE.is_file():
        return _SA_NAMESPACE.read_text().strip() or "default"
    return os.environ.get("TRAINPOOL_NAMESPACE", "default")


def _raw(resp: object) -> dict[str, Any]:
    """The JSON body of a call made with ``_preload_content=False``: plain dicts, as
    the watch mirrors hold them, without the client's model classes."""
    data: dict[str, Any] = json.loads(getattr(resp, "data", b"{}"))
    return data


def _body(manifest: dict[str, Any]) -> Any:
    return manifest  # the client accepts plain dicts as bodies; its annotations say models
