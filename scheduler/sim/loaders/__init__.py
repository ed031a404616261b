"""Built-in trace formats; each module registers itself on import."""

from scheduler.sim.loaders import philly, philly_vc

__all__ = ["philly", "philly_vc"]
