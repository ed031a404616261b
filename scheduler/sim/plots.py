"""PNG plots of a replay (matplotlib, Agg backend): JCT CDF per policy, utilization over
time, and per-org share over time against entitlement."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scheduler.sim import metrics
from scheduler.sim.record import SimResult, TimelineArrays

MAX_ORG_LINES = 8


def resample(tl: TimelineArrays, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time averages of piecewise-constant ``values`` (segments x k) over bins ``edges``."""
    if not len(tl.start):
        return np.zeros((len(edges) - 1, values.shape[1]))
    seg_edges = np.append(tl.start, tl.start[-1] + tl.dt[-1])
    area = np.vstack([np.zeros(values.shape[1]), np.cumsum(values * tl.dt[:, None], axis=0)])
    at = np.column_stack([np.interp(edges, seg_edges, area[:, k]) for k in range(values.shape[1])])
    return np.diff(at, axis=0) / np.diff(edges)[:, None]


def write_plots(results: Sequence[SimResult], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        jct = np.sort([j.jct / 3600 for j in metrics.completed(r.jobs)])
        if len(jct):
            ax.plot(jct, np.arange(1, len(jct) + 1) / len(jct), label=r.policy)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (hours)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT CDF")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "jct_cdf.png", plt))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in results:
        tl = r.timeline.arrays()
        edges = _edges(tl)
        util = resample(tl, tl.alloc.sum(axis=1, keepdims=True), edges)[:, 0] / r.capacity
        ax.plot(edges[:-1] / 86400, util, label=r.policy, linewidth=1)
    ax.set_xlabel("virtual time (days)")
    ax.set_ylabel("accelerators held / capacity")
    ax.set_ylim(0, 1.05)
    ax.set_title("Utilization over time")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "utilization.png", plt))

    for r in results:
        written.append(_share_plot(r, out / f"share_{r.policy}.png", plt))
    return written


def _share_plot(r: SimResult, path: Path, plt: object) -> Path:
    import matplotlib.pyplot as mplt

    tl = r.timeline.arrays()
    edges = _edges(tl)
    ent = metrics.entitlement(tl, r.capacity, r.nominal, r.weights)
    share = resample(tl, tl.alloc, edges) / r.capacity
    entitled = resample(tl, ent, edges) / r.capacity
    top = sorted(range(len(tl.orgs)), key=lambda k: -r.nominal.get(tl.orgs[k], 0))[:MAX_ORG_LINES]
    fig, ax = mplt.subplots(figsize=(10, 5))
    for k in top:
        (line,) = ax.plot(edges[:-1] / 86400, share[:, k], linewidth=1, label=tl.orgs[k])
        ax.plot(edges[:-1] / 86400, entitled[:, k], linestyle="--", linewidth=0.8, color=line.get_color())
    ax.set_xlabel("virtual time (days)")
    ax.set_ylabel("share of capacity")
    ax.set_title(f"{r.policy}: per-org share (solid) vs entitlement (dashed), largest {len(top)} quotas")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path, mplt)


def _edges(tl: TimelineArrays, bins: int = 400) -> np.ndarray:
    end = tl.start[-1] + tl.dt[-1] if len(tl.start) else 1.0
    start = tl.start[0] if len(tl.start) else 0.0
    return np.linspace(start, max(end, start + 1.0), bins + 1)


def _save(fig: object, path: Path, plt: object) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[attr-defined]
    return path
