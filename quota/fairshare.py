"""Fair-share arithmetic: half-life decay and the weighted dominant-resource share.

An org's share on a flavor adds its current allocation (a fraction of the flavor's
capacity) and its decayed past usage, normalised by the most decayed usage that full use
of the flavor forever would give (``cap * half_life / ln 2``). Both terms live on the same
0..1 scale, so an org that used the whole flavor all last week ranks like one that holds
it all right now. The dominant flavor decides (DRF), and the org's weight divides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

LN2 = math.log(2.0)


def decay(value: float, elapsed_seconds: float, half_life_seconds: float) -> float:
    """``value`` after ``elapsed_seconds`` of exponential decay."""
    if elapsed_seconds <= 0:
        return value
    return value * 0.5 ** (elapsed_seconds / half_life_seconds)


def accumulate(decayed: float, elapsed_seconds: float, rate: float, half_life_seconds: float) -> float:
    """Decayed usage after ``elapsed_seconds`` during which ``rate`` accelerators were held.

    Exact integral of the decayed usage, so the ledger does not depend on how often it is
    updated: ``U' = U * d + rate * tau * (1 - d)`` with ``d = 2^(-dt/h)``, ``tau = h / ln 2``.
    """
    d = 0.5 ** (elapsed_seconds / half_life_seconds)
    return decayed * d + rate * (half_life_seconds / LN2) * (1.0 - d)


def dominant_share(
    alloc: Mapping[str, int],
    usage: Mapping[str, float],
    capacity: Mapping[str, int],
    weight: float,
    half_life_seconds: float,
) -> float:
    tau = half_life_seconds / LN2
    best = 0.0
    for flavor, cap in capacity.items():
        if cap <= 0:
            continue
        share = alloc.get(flavor, 0) / cap + usage.get(flavor, 0.0) / (cap * tau)
        if share > best:
            best = share
    return best / weight
