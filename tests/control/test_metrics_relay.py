"""One /metrics for two processes: each side's series, added where both keep one, in
text that Prometheus parses (no family twice)."""

from __future__ import annotations

import pickle

from prometheus_client import Metric, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.control.metrics_relay import render
from scheduler.metrics import Metrics


def loop_side() -> list[Metric]:
    """What the loop's process sends: its registry, collected and pickled."""
    loop = Metrics()
    loop.leader.set(1)
    loop.cycle_seconds.observe(0.03)
    loop.cycle_seconds.observe(0.3)
    loop.gc_pause.observe(0.002)
    loop.preemptions.labels("a", "reclaim").inc(2)
    return list(pickle.loads(pickle.dumps(list(loop.registry.collect()))))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_servers_metrics_show_both_processes_series_once() -> None:
    api = Metrics()
    api.submissions.labels("a").inc(5)
    api.gc_pause.observe(0.004)
    text = render(api.registry, loop_side()).decode()

    types = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)), "a family appears twice"
    got = samples(text)
    assert got[("trainpool_job_submissions_total", (("org", "a"),))] == 5  # the API's
    assert got[("trainpool_leader", ())] == 1  # the loop's, over the API's unwritten zero
    assert got[("trainpool_preemptions_total", (("org", "a"), ("reason", "reclaim")))] == 2
    assert got[("trainpool_scheduling_cycle_seconds_count", ())] == 2
    assert got[("trainpool_scheduling_cycle_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("trainpool_gc_pause_seconds_count", ())] == 2  # both collect: added


def test_histogram_buckets_stay_in_order_after_the_merge() -> None:
    text = render(Metrics().registry, loop_side()).decode()
    bounds = [
        line.split('le="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("trainpool_scheduling_cycle_seconds_bucket")
    ]
    assert bounds[-1] == "+Inf" and [float(b) for b in bounds[:-1]] == sorted(float(b) for b in bounds[:-1])


def test_a_created_time_is_the_earlier_not_a_sum() -> None:
    api = Metrics()
    api.submissions.labels("a").inc()
    loop = Metrics()
    loop.submissions.labels("a").inc()
    created = {
        m.name: s.value for m in loop.registry.collect() for s in m.samples if s.name.endswith("_created")
    }
    got = samples(render(api.registry, list(loop.registry.collect())).decode())
    merged = got[("trainpool_job_submissions_created", (("org", "a"),))]
    assert merged <= created["trainpool_job_submissions"] < 2 * merged


def test_with_nothing_from_the_loop_the_registry_is_rendered_as_it_is() -> None:
    api = Metrics()
    api.submissions.labels("a").inc()
    assert render(api.registry, []) == generate_latest(api.registry)
