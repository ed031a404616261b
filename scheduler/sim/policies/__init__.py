"""The policies `trainpool sim --policy` knows, by name, in the order reports list them."""

from __future__ import annotations

from scheduler.sim.policies.base import CorePolicy, SimPolicy
from scheduler.sim.policies.baselines import FIFO, KUEUE, SLURM, TRAINPOOL
from scheduler.sim.policies.tiresias import Tiresias

POLICY_NAMES = ("fifo", "slurm", "kueue", "tiresias", "trainpool")


def get_policy(name: str) -> SimPolicy:
    policies: dict[str, SimPolicy] = {
        "fifo": FIFO,
        "slurm": SLURM,
        "kueue": KUEUE,
        "tiresias": Tiresias(),
        "trainpool": TRAINPOOL,
    }
    if name not in policies:
        raise ValueError(f"--policy: unknown policy '{name}' (known: {', '.join(POLICY_NAMES)}, all)")
    return policies[name]


def resolve(spec: str) -> list[str]:
    """``all``, one name, or a comma-separated list."""
    names = list(POLICY_NAMES) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        get_policy(name)
    return names


__all__ = ["POLICY_NAMES", "CorePolicy", "SimPolicy", "get_policy", "resolve"]
