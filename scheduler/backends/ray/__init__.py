"""The ``ray`` backend (see docs/RAY.md): gangs on a Ray cluster whose nodes carry
trainpool labels, and ``LocalRayCluster`` (``cluster.py``), a local cluster of simulated
accelerator nodes for ``trainpool up``, the demo and the tests.

Ray is imported only when the backend is built: the pure modules (``labels``,
``layout``, ``verdict``) import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.backends.registry import BackendSettings

if TYPE_CHECKING:
    from scheduler.backends.ray.backend import RayBackend


def from_server(settings: BackendSettings) -> RayBackend:
    """Options (``--backend-opt``): ``namespace`` (default trainpool), ``workdir`` (where
    jobs run on the nodes; default the server's working directory), ``start_timeout``
    (seconds a gang may take to start, default 300)."""
    from scheduler.backends.ray.backend import RayBackend

    opts = settings.options
    try:
        start_timeout = float(opts.get("start_timeout", "300"))
    except ValueError:
        raise ValueError(f"--backend-opt start_timeout: '{opts['start_timeout']}' is not a number") from None
    config = settings.config
    return RayBackend(
        settings.address,
        state_dir=settings.state_dir,
        workdir=opts.get("workdir"),
        namespace=opts.get("namespace", "trainpool"),
        visibility={f.name: f.visibility_env for f in config.flavors},
        defaults={n.name: n for n in config.all_nodes},
        start_timeout=start_timeout,
    )


def __getattr__(name: str) -> Any:
    if name == "RayBackend":
        from scheduler.backends.ray.backend import RayBackend

        return RayBackend
    raise AttributeError(name)


__all__ = ["RayBackend", "from_server"]
