"""The driver's connection to Ray, shared by the backends of one process (Ray allows
one per process)."""

from __future__ import annotations

import logging

import ray

from scheduler.backends.base import BackendError

_connections = 0


def connect(address: str | None, namespace: str) -> bool:
    """ray.init once per process; later backends share it. True if this call opened it."""
    global _connections
    if ray.is_initialized():
        current = ray.get_runtime_context().namespace
        if current != namespace:
            raise BackendError(
                f"this process is connected to Ray in namespace '{current}', not '{namespace}'"
            )
        if _connections == 0:
            return False  # someone else's connection; never ours to close
        _connections += 1
        return True
    host = (address or "").rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        from scheduler.backends.ray.cluster import use_loopback

        use_loopback()  # a cluster on loopback (LocalRayCluster): connect there, not via the host's IP
    try:
        ray.init(
            address=address or "auto", namespace=namespace, log_to_driver=False,
            logging_level=logging.WARNING, configure_logging=False,
        )  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BackendError(f"cannot connect to the Ray cluster at '{address or 'auto'}': {exc}") from None
    _connections = 1
    return True


def disconnect() -> None:
    global _connections
    _connections -= 1
    if _connections <= 0:
        _connections = 0
        ray.shutdown()
