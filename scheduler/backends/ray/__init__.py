"""The ``ray`` backend (see docs/RAY.md): gangs on a Ray cluster whose nodes carry
trainpool labels, and ``LocalRayCluster`` (``cluster.py``), a local cluster of simulated
accelerator nodes for ``trainpool up``, the demo and the tests.

Ray is imported only when the backend is built: the pure modules (``labels``,
``layout``, ``gang``) import without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from scheduler.backends.registry import BackendSettings

if TYPE_CHECKING:
    from scheduler.backends.ray.backend import RayBackend


def from_server(settings: BackendSettings) -> RayBackend:
    """Options (``--backend-opt``): ``namespace`` (default trainpool), ``workdir`` (where
    jobs run on the nodes; default the server's working directory), ``start_timeout``
    (seconds a gang may take to start, default 300), ``correlation_window`` (seconds a
    replica's non-zero exit waits for a node loss that would make it the
    infrastructure's failure; default Ray's node-loss detection time, from the
    ``RAY_health_check_*`` settings)."""
    from scheduler.backends.ray.backend import RayBackend

    opts = settings.options
    start_timeout = _seconds(opts, "start_timeout")
    window = _seconds(opts, "correlation_window")
    config = settings.config
    return RayBackend(
        settings.address,
        state_dir=settings.state_dir,
        workdir=opts.get("workdir"),
        namespace=opts.get("namespace", "trainpool"),
        visibility={f.name: f.visibility_env for f in config.flavors},
        defaults={n.name: n for n in config.all_nodes},
        start_timeout=300.0 if start_timeout is None else start_timeout,
        correlation_window=window,
    )


def _seconds(opts: Mapping[str, str], name: str) -> float | None:
    text = opts.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--backend-opt {name}: '{text}' is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"--backend-opt {name}: '{text}' must not be negative")
    return value


def __getattr__(name: str) -> Any:
    if name == "RayBackend":
        from scheduler.backends.ray.backend import RayBackend

        return RayBackend
    raise AttributeError(name)


__all__ = ["RayBackend", "from_server"]
