"""A Kubernetes API for the backend tests: kmock's emulator over HTTP on 127.0.0.1 and
the official client (helpers in k8s_support.py, a unique module name: every test
directory has a conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_emulator import EmulatorThread
from k8s_support import NS, CoreApi
from kubernetes import client

from scheduler.backends.kubernetes import KubernetesBackend
from scheduler.backends.kubernetes.options import KubeOptions


@pytest.fixture
def cluster() -> Iterator[EmulatorThread]:
    t = EmulatorThread().start()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def api(cluster: EmulatorThread) -> CoreApi:
    cfg = client.Configuration()
    cfg.host = cluster.url
    return CoreApi(client.ApiClient(cfg))


@pytest.fixture
def kubeconfig(cluster: EmulatorThread, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{cluster.url}'}}}}]\n"
        "users: [{name: test, user: {token: test}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: test, namespace: pool}}]\n"
    )
    return path


@pytest.fixture
def make_backend(api: CoreApi) -> Iterator[Callable[..., KubernetesBackend]]:
    made: list[KubernetesBackend] = []

    def make(checkpoint_root: str = "checkpoints", **opts: Any) -> KubernetesBackend:
        options = KubeOptions(**{"watch_seconds": 2, "sync_seconds": 10.0, **opts})
        b = KubernetesBackend(
            api, options, namespace=NS, flavors={"h100", "ascend910"}, checkpoint_root=checkpoint_root
        )
        made.append(b)
        assert b.wait_synced(10)
        return b

    yield make
    for b in made:
        b.close()
