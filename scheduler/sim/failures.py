"""The failure model: an explicit, documented model, never a measurement.

Nodes fail as independent Poisson processes with a per-node MTBF. A failure interrupts
every job with a replica on the node at once; the node is replaced straight away (the
model charges the jobs, not the pool's capacity). Each job checkpoints every
``checkpoint_interval`` seconds of progress; an interrupted job (failure or preemption)
keeps the work up to its last checkpoint, loses the rest, and pays ``restart_overhead``
seconds when it starts again. Presets:

- ``philly``: per-node MTBF calibrated on the trace itself so that 30% of its multi-hour
  jobs (run time >= 2 h) would meet at least one failure, as published for Philly
  (Jeon et al., ATC'19: about 30% of jobs failed; the trace carries no per-job status).
- ``llama3``: 419 unexpected interruptions in 54 days on 16,384 GPUs (Llama 3 paper,
  Meta 2024), i.e. a per-GPU rate, times the pool's GPUs per node.
- ``mtbf=SECONDS``: a per-node MTBF given by hand; ``none``: no failures.

Hangs (``--hangs``) are a second, separate process: a gang stops stepping while its
processes live, at a per-node rate over the seconds it runs (Poisson in its progress, so
every policy sees the same hangs in the same jobs' work). A hung gang holds its nodes
until it is stopped: after ``hang_detect_s`` with the pool's detection (the hang limit,
``values.progress``), else after ``hang_undetected_s`` (a modelled human noticing, or a
timeout the job's framework may or may not have). It then restarts from its checkpoint
before the hang, uncharged. Presets: ``llama3``, the 7 of Llama 3's 419 interruptions
it attributes to NCCL watchdog timeouts (Meta 2024, its table of root causes), as a
per-GPU rate; ``mtbf=SECONDS`` per node; ``none``.

Stragglers (``--stragglers``) are a third process, drawn the same way: a node of a running
gang turns fail-slow, and the gang (synchronous: it runs at its slowest rank's pace) makes
progress ``straggler_slowdown`` times slower for the rest of the attempt. With the pool's
detection (``values.progress``) the verdict comes ``straggler_detect_s`` after the onset
and the gang is moved once the time lost to the slowness reaches the move's cost (work
since the checkpoint + the restart overhead), the break-even rule of the service: it
restarts from its checkpoint off that node, uncharged. Without detection it stays slow
until the attempt ends. The slowness belongs to the attempt (its node is not modelled
further). Only ``mtbf=SECONDS`` per node, given by hand: no published rate is used.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

MULTI_HOUR_S = 2 * 3600.0
PHILLY_TARGET = 0.30
LLAMA3_INTERRUPTIONS, LLAMA3_DAYS, LLAMA3_GPUS = 419, 54, 16_384
LLAMA3_HANGS = 7  # NCCL watchdog timeouts


@dataclass(frozen=True)
class FailureModel:
    name: str
    node_mtbf_s: float | None  # None: no failures
    checkpoint_interval_s: float = 3600.0
    restart_overhead_s: float = 300.0
    basis: str = ""
    hang_node_mtbf_s: float | None = None  # None: no hangs
    hang_detect_s: float | None = 600.0  # None: the pool does not detect hangs
    hang_undetected_s: float = 7200.0
    hang_basis: str = ""
    slow_node_mtbf_s: float | None = None  # None: no stragglers
    straggler_slowdown: float = 2.0
    straggler_detect_s: float | None = 300.0  # None: the pool does not detect stragglers

    @property
    def hang_lasts_s(self) -> float:
        return self.hang_detect_s if self.hang_detect_s is not None else self.hang_undetected_s

    def first_hang(self, seed: int, job_id: str, attempt: int, nodes: int) -> float | None:
        """Seconds of progress into this attempt when its gang hangs (None: no hangs). Drawn
        per (job, attempt) from the seed alone, so every policy sees the same ones."""
        if self.hang_node_mtbf_s is None:
            return None
        rng = np.random.default_rng([seed, 0x4A46, zlib.crc32(job_id.encode()), attempt])
        return float(rng.exponential(self.hang_node_mtbf_s / max(1, nodes)))

    def first_slow(self, seed: int, job_id: str, attempt: int, nodes: int) -> tuple[float, int] | None:
        """Seconds of progress into this attempt when one of its nodes turns slow, and
        which (its index in the gang); None without stragglers. Seeded like first_hang."""
        if self.slow_node_mtbf_s is None:
            return None
        rng = np.random.default_rng([seed, 0x534C, zlib.crc32(job_id.encode()), attempt])
        return float(rng.exponential(self.slow_node_mtbf_s / max(1, nodes))), int(rng.integers(max(1, nodes)))

    def describe(self) -> str:
        head = (
            "no node failures"
            if self.node_mtbf_s is None
            else f"node failures, Poisson, per-node MTBF {self.node_mtbf_s / 86_400:,.1f} days"
        )
        hangs = "no hangs"
        if self.hang_node_mtbf_s is not None:
            caught = (
                f"stopped {self.hang_detect_s:g} s after they begin (detection)"
                if self.hang_detect_s is not None
                else f"stopped {self.hang_undetected_s:g} s after they begin (no detection)"
            )
            days = self.hang_node_mtbf_s / 86_400
            hangs = f"hangs, per-node MTBF {days:,.1f} days ({self.hang_basis}), {caught}"
        if self.slow_node_mtbf_s is not None:
            moved = (
                f"moved at break-even, judged {self.straggler_detect_s:g} s after the onset"
                if self.straggler_detect_s is not None
                else "never moved (no detection)"
            )
            hangs += (
                f"; stragglers, per-node MTBF {self.slow_node_mtbf_s / 86_400:,.1f} days (given by hand), "
                f"{self.straggler_slowdown:g}x slower, {moved}"
            )
        return (
            f"{head} ({self.name}: {self.basis}); {hangs}; checkpoint every {self.checkpoint_interval_s:g} s "
            f"of progress; restart overhead {self.restart_overhead_s:g} s; failed nodes replaced at once. "
            "Modelled, not measured."
        )


class FailureSpecError(ValueError):
    pass


def parse_failures(
    spec: str,
    job_shapes: Sequence[tuple[int, float]],
    node_size: int,
    checkpoint_interval_s: float = 3600.0,
    restart_overhead_s: float = 300.0,
) -> FailureModel:
    """``spec`` is none | philly | llama3 | mtbf=SECONDS; ``job_shapes`` are (nodes, run time)."""
    if checkpoint_interval_s <= 0:
        raise FailureSpecError(f"--checkpoint-interval: must be > 0 (got {checkpoint_interval_s})")
    if restart_overhead_s < 0:
        raise FailureSpecError(f"--restart-overhead: must be >= 0 (got {restart_overhead_s})")
    common: dict[str, Any] = {
        "checkpoint_interval_s": checkpoint_interval_s,
        "restart_overhead_s": restart_overhead_s,
    }
    if spec == "none":
        return FailureModel("none", None, basis="failure injection off", **common)
    if spec == "philly":
        mtbf = calibrate_mtbf(job_shapes, PHILLY_TARGET, MULTI_HOUR_S)
        basis = f"calibrated so {PHILLY_TARGET:.0%} of this trace's jobs of >= 2 h meet a failure"
        return FailureModel("philly", mtbf, basis=basis, **common)
    if spec == "llama3":
        mtbf = llama3_node_mtbf(node_size)
        basis = f"{LLAMA3_INTERRUPTIONS} interruptions in {LLAMA3_DAYS} days on {LLAMA3_GPUS:,} GPUs"
        return FailureModel("llama3", mtbf, basis=basis, **common)
    if spec.startswith("mtbf="):
        mtbf = _given_mtbf("--failures", spec)
        return FailureModel("mtbf", mtbf, basis="per-node MTBF given by hand", **common)
    raise FailureSpecError(f"--failures: unknown model '{spec}' (use none, philly, llama3 or mtbf=SECONDS)")


def with_hangs(
    model: FailureModel, spec: str, node_size: int, detect_s: float | None, undetected_s: float
) -> FailureModel:
    """``model`` with the hang process ``spec`` (none | llama3 | mtbf=SECONDS)."""
    if detect_s is not None and not detect_s >= 0:
        raise FailureSpecError(f"--hang-detect: must be >= 0 seconds (got {detect_s})")
    if not undetected_s >= 0:
        raise FailureSpecError(f"--hang-undetected: must be >= 0 seconds (got {undetected_s})")
    if spec == "none":
        mtbf, basis = None, ""
    elif spec == "llama3":
        mtbf = llama3_node_mtbf(node_size, LLAMA3_HANGS)
        basis = f"{LLAMA3_HANGS} NCCL watchdog timeouts in {LLAMA3_DAYS} days on {LLAMA3_GPUS:,} GPUs"
    elif spec.startswith("mtbf="):
        mtbf = _given_mtbf("--hangs", spec)
        basis = "per-node hang MTBF given by hand"
    else:
        raise FailureSpecError(f"--hangs: unknown model '{spec}' (use none, llama3 or mtbf=SECONDS)")
    return replace(model, hang_node_mtbf_s=mtbf, hang_detect_s=detect_s, hang_undetected_s=undetected_s,
                   hang_basis=basis)  # fmt: skip


def with_stragglers(model: FailureModel, spec: str, slowdown: float, detect_s: float | None) -> FailureModel:
    """``model`` with the straggler process ``spec`` (none | mtbf=SECONDS)."""
    if not (slowdown > 1 and math.isfinite(slowdown)):
        raise FailureSpecError(f"--straggler-slowdown: must be > 1 (got {slowdown})")
    if detect_s is not None and not detect_s >= 0:
        raise FailureSpecError(f"--straggler-detect: must be >= 0 seconds (got {detect_s})")
    if spec == "none":
        mtbf = None
    elif spec.startswith("mtbf="):
        mtbf = _given_mtbf("--stragglers", spec)
    else:
        raise FailureSpecError(f"--stragglers: unknown model '{spec}' (use none or mtbf=SECONDS)")
    return replace(model, slow_node_mtbf_s=mtbf, straggler_slowdown=slowdown, straggler_detect_s=detect_s)


def _given_mtbf(option: str, spec: str) -> float:
    """The seconds of ``mtbf=SECONDS``."""
    try:
        mtbf = float(spec.removeprefix("mtbf="))
    except ValueError:
        mtbf = -1.0
    if not (mtbf > 0 and math.isfinite(mtbf)):
        raise FailureSpecError(f"{option}: mtbf= needs a number of seconds > 0 (got '{spec}')")
    return mtbf


def llama3_node_mtbf(node_size: int, interruptions: int = LLAMA3_INTERRUPTIONS) -> float:
    per_gpu_rate = interruptions / (LLAMA3_DAYS * 86_400.0 * LLAMA3_GPUS)
    return 1.0 / (per_gpu_rate * node_size)


def hit_probability(nodes: np.ndarray, durations: np.ndarray, mtbf: float) -> np.ndarray:
    """P(a job on ``nodes`` nodes for ``durations`` seconds meets >= 1 node failure)."""
    return np.asarray(1.0 - np.exp(-nodes * durations / mtbf))


def calibrate_mtbf(job_shapes: Sequence[tuple[int, float]], target: float, min_duration: float) -> float:
    """The per-node MTBF at which a fraction ``target`` of jobs longer than ``min_duration``
    meet at least one failure (bisection in log space; the fraction falls as MTBF grows)."""
    shapes = [(n, d) for n, d in job_shapes if d >= min_duration]
    if not shapes:
        raise FailureSpecError("--failures philly: the trace has no multi-hour jobs to calibrate on")
    nodes = np.array([n for n, _ in shapes], dtype=float)
    durations = np.array([d for _, d in shapes], dtype=float)
    lo, hi = math.log(1.0), math.log(1e12)
    for _ in range(100):
        mid = (lo + hi) / 2
        if hit_probability(nodes, durations, math.exp(mid)).mean() > target:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def young_daly_loss(jobs: Sequence[tuple[int, int, float]], model: FailureModel) -> float:
    """Expected accelerator-seconds lost to failures, first order (Young 1974, Daly 2006):
    each job of ``acc`` accelerators on ``nodes`` nodes running ``d`` seconds expects
    ``nodes * d / MTBF`` failures, each losing half a checkpoint interval plus the restart."""
    if model.node_mtbf_s is None:
        return 0.0
    per_failure = model.checkpoint_interval_s / 2 + model.restart_overhead_s
    return sum(acc * nodes * d / model.node_mtbf_s * per_failure for acc, nodes, d in jobs)


class FailureStream:
    """Pool-wide failure times and nodes from one seeded generator, so every policy in a
    run sees the same failures at the same times on the same nodes."""

    def __init__(self, model: FailureModel, n_nodes: int, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0xFA11])
        self._mean_gap = None if model.node_mtbf_s is None else model.node_mtbf_s / n_nodes
        self._n = n_nodes

    def next_after(self, t: float) -> tuple[float, int] | None:
        if self._mean_gap is None:
            return None
        return t + float(self._rng.exponential(self._mean_gap)), int(self._rng.integers(self._n))
