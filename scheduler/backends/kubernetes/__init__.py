"""The ``kubernetes`` backend (see ``backend.py`` for the design and docs/KUBERNETES.md)."""

from __future__ import annotations

from scheduler.backends.kubernetes.backend import KubernetesBackend, api_client, default_namespace
from scheduler.backends.kubernetes.options import OptionError, parse_options
from scheduler.backends.registry import BackendSettings

__all__ = ["KubernetesBackend", "from_server"]


def from_server(settings: BackendSettings) -> KubernetesBackend:
    from kubernetes import client

    from scheduler.backends.base import BackendError

    try:
        opts = parse_options(settings.options)
    except OptionError as exc:
        raise BackendError(str(exc)) from None
    api = client.CoreV1Api(api_client(settings.address))
    backend = KubernetesBackend(
        api,
        opts,
        namespace=opts.namespace or default_namespace(settings.address),
        flavors={f.name for f in settings.config.flavors},
        checkpoint_root=str(settings.checkpoint_root),
    )
    return backend
