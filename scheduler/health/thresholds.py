"""The numbers of the health model, in one place, with the defaults documented in docs/HEALTH.md.

Loaded from a JSON or YAML file named by ``TRAINPOOL_HEALTH_CONFIG`` (any subset of the
fields); a wrong field is refused with its name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from values.errors import validation_problems


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Evidence window: loss and RTT are judged over the reports of the last window.
    window_seconds: float = Field(10.0, gt=0, le=3600)
    # A pair needs this many probes in the window before its loss counts at all.
    min_probes: int = Field(20, ge=1)
    loss_degraded: float = Field(0.02, gt=0, le=1)
    loss_unhealthy: float = Field(0.20, gt=0, le=1)
    # RTT over the pair's own baseline (the lowest report median seen in baseline_seconds).
    rtt_degraded_seconds: float = Field(0.010, gt=0)
    rtt_unhealthy_seconds: float = Field(0.100, gt=0)
    baseline_seconds: float = Field(3600.0, gt=0)
    # "Most pairs": the share of a node's (or a rack's crossing) pairs that must be bad.
    majority: float = Field(0.5, gt=0, le=1)
    min_bad_pairs: int = Field(2, ge=1)
    # Error counters: per second over the window, summed over a node's interfaces/ports.
    nic_errors_per_second: float = Field(1.0, gt=0)
    ib_errors_per_second: float = Field(0.5, gt=0)
    gpu_temperature_celsius: float = Field(90.0, gt=0)
    # Hysteresis: a level must hold this long before the state rises to it; a state
    # falls only after this long with no signal at or above it.
    degrade_after_seconds: float = Field(4.0, ge=0)
    unhealthy_after_seconds: float = Field(8.0, ge=0)
    quiet_seconds: float = Field(60.0, ge=0)
    # A straggler verdict (a rank of a gang slower than its peers) blames its node. With
    # the node's own evidence within this long of the blame it degrades the node: evidence
    # counts at this share of each degrade threshold above (NIC and InfiniBand errors,
    # probe loss and RTT over its pairs), and any GPU clock slowdown, corrected ECC or XID.
    straggler_blame_seconds: float = Field(600.0, gt=0)
    straggler_evidence_share: float = Field(0.25, gt=0, le=1)
    # Heartbeats: silent this long makes the node suspect (degraded, never unhealthy:
    # a dead agent does not prove dead accelerators). Shorter than the way to unhealthy
    # by loss (unhealthy_after plus the time the window needs to show the loss), so a
    # killed agent, whose probe port dies with it, is found silent before it is found lossy.
    suspect_after_seconds: float = Field(6.0, gt=0)
    # Peer lists: every rack mate plus this many nodes elsewhere, re-drawn every rotate_seconds.
    other_rack_peers: int = Field(8, ge=0)
    rotate_seconds: float = Field(300.0, gt=0)
    # How often the server evaluates, and what it tells agents to use.
    evaluate_seconds: float = Field(1.0, gt=0)
    probe_interval_seconds: float = Field(0.5, gt=0)
    report_interval_seconds: float = Field(2.0, gt=0)
    # Reports stamped further than this from the server's clock are refused.
    max_clock_skew_seconds: float = Field(120.0, gt=0)


class ThresholdsError(ValueError):
    pass


def load_thresholds(path: str | None = None) -> Thresholds:
    """From ``path`` (or ``TRAINPOOL_HEALTH_CONFIG``); the defaults when neither is set."""
    path = path or os.environ.get("TRAINPOOL_HEALTH_CONFIG") or None
    if not path:
        return Thresholds()
    text = Path(path).read_text()
    try:
        data: Any = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ThresholdsError(f"{path}: cannot parse ({type(exc).__name__})") from None
    if data is None:
        return Thresholds()
    if not isinstance(data, dict):
        raise ThresholdsError(f"{path}: expected a mapping of threshold names to values")
    try:
        return Thresholds.model_validate(data)
    except ValidationError as exc:
        field, message = validation_problems(exc)[0]
        raise ThresholdsError(f"{path}: {field}: {message}") from None
