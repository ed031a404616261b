"""One ``/metrics`` for a server of two processes: the API's registry with the loop
process's metrics added in.

Both processes build the same ``Metrics``; each series is written by one of them (the
API counts requests and submissions, the loop everything about cycles, jobs and nodes),
or is a count both keep (garbage-collection pauses). So adding the two, series by
series, is exact: the side that never wrote a series adds its zero. A ``_created``
sample is a time, not a count: the earlier one is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.samples import Sample


def render(registry: CollectorRegistry, other: list[Metric]) -> bytes:
    """The Prometheus text of ``registry`` with ``other``'s families added in."""
    if not other:
        return generate_latest(registry)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Fixed(merge(registry.collect(), other)))
    return generate_latest(merged)


def merge(own: Iterable[Metric], other: Iterable[Metric]) -> list[Metric]:
    families = {family.name: family for family in own}
    for family in other:
        mine = families.get(family.name)
        if mine is None:
            families[family.name] = family
        else:
            mine.samples = _added(mine.samples, family.samples)
    return list(families.values())


def _added(own: list[Sample], other: list[Sample]) -> list[Sample]:
    # Keyed in order of appearance, so a histogram's buckets stay in their order.
    out = {(s.name, tuple(sorted(s.labels.items()))): s for s in own}
    for s in other:
        key = (s.name, tuple(sorted(s.labels.items())))
        have = out.get(key)
        if have is None:
            out[key] = s
        elif s.name.endswith("_created"):
            out[key] = have._replace(value=min(have.value, s.value))
        else:
            out[key] = have._replace(value=have.value + s.value)
    return list(out.values())


class _Fixed:
    """A collector of families already collected."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
