"""Which backends exist, and how a server builds one.

Each backend is a module ``scheduler.backends.<module>`` with a function
``from_server(settings: BackendSettings) -> Backend``. Modules are imported only when
chosen, so a server on the ``sim`` backend never imports Ray or the Kubernetes client.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.backends.base import Backend
    from scheduler.config import PoolConfig

# --backend name -> module
BACKENDS = {
    "sim": "scheduler.backends.sim",
    "ray": "scheduler.backends.ray",
    "kubernetes": "scheduler.backends.kubernetes",
}


@dataclass(frozen=True)
class BackendSettings:
    config: PoolConfig
    # Ray: the cluster address ("auto", "127.0.0.1:6379"); Kubernetes: a kubeconfig path
    # or "in-cluster"; sim: unused.
    address: str | None = None
    # Where jobs' checkpoints live; shared by every node (a shared filesystem or volume).
    checkpoint_root: Path = Path("checkpoints")
    # Where a backend may keep state of its own (the sim's gang file, logs).
    state_dir: Path = Path(".")
    # Backend-specific --backend-opt key=value pairs.
    options: dict[str, str] = field(default_factory=dict)
    sim_duration: float = 60.0
    sim_state: Path | None = None


class UnknownBackend(ValueError):
    pass


def build_backend(name: str, settings: BackendSettings) -> Backend:
    module_name = BACKENDS.get(name)
    if module_name is None:
        raise UnknownBackend(f"--backend: '{name}' is not a backend (choose from {', '.join(BACKENDS)})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownBackend(
            f"--backend: '{name}' cannot be loaded here ({exc}); install trainpool with its dependencies"
        ) from None
    backend: Backend = module.from_server(settings)
    return backend
