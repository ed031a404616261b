"""The benchmark's targets (issue 2) and the human-readable table of its figures."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

# The size at which the targets are set; at other sizes they are shown for reference.
TARGET_SIZE = {"nodes": 12_500, "jobs": 100_000, "orgs": 50}


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    op: str
    limit: float
    unit: str

    def met(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = {"<": operator.lt, ">=": operator.ge}[self.op]
        return compare(value, self.limit)


TARGETS = (
    Target("steady_cycle_p99_s", "<", 0.25, "s"),
    Target("cold_gangs_per_s", ">=", 5_000, "gangs/s"),
    # "2 GB" read as 2 GiB; peak_rss_mb is in MiB.
    Target("peak_rss_mb", "<", 2048, "MiB"),
)


def add_targets(results: dict[str, Any]) -> None:
    """Marks each target met or not, and whether the run was at the size they are set for."""
    params = results["params"]
    results["at_target_size"] = all(params[k] == v for k, v in TARGET_SIZE.items())
    results["targets"] = {
        t.key: {
            "op": t.op,
            "limit": t.limit,
            "value": results[t.key],
            "met": results[t.key] is not None and t.met(results[t.key]),
        }
        for t in TARGETS
    }


def _row(table: Table, label: str, value: str, target: str = "", status: str = "") -> None:
    table.add_row(label, value, target, status)


def render_table(results: dict[str, Any], console: Console) -> None:
    p = results["params"]
    title = (
        f"trainpool bench scheduler — {p['nodes']:,} nodes ({p['accelerators']:,} accelerators), "
        f"{p['jobs']:,} jobs, {p['orgs']} orgs, seed {p['seed']}"
    )
    table = Table(title=title)
    for col in ("figure", "value", "target", "status"):
        table.add_column(col, justify="right" if col == "value" else "left")
    marks = {
        key: ("[green]met[/]" if t["met"] else "[red]not met[/]") for key, t in results["targets"].items()
    }
    limits = {key: f"{t['op']} {t['limit']:,g}" for key, t in results["targets"].items()}
    _row(table, "setup (generate pool and queue)", f"{results['setup_s']:.2f} s")
    _row(table, "cold cycle", f"{results['cold_cycle_s']:.3f} s")
    _row(
        table,
        "cold: snapshot / decide",
        f"{results['cold_snapshot_s']:.3f} / {results['cold_decide_s']:.3f} s",
    )
    _row(table, "cold: CPU time", f"{results['cold_cpu_s']:.3f} s")
    _row(table, "cold: gangs placed", f"{results['cold_placed']:,}")
    _row(table, "cold: pending after", f"{results['pending_after_cold']:,}")
    _row(table, "cold: utilization", f"{results['cold_utilization']:.1%}")
    _row(
        table,
        "cold: gangs placed per second",
        f"{results['cold_gangs_per_s']:,.0f}",
        limits["cold_gangs_per_s"],
        marks["cold_gangs_per_s"],
    )
    if results["steady_cycles"]:
        _row(table, "steady cycle p50", f"{results['steady_cycle_p50_s']:.3f} s")
        p99_label = "steady cycle p99" + (" (= max: < 100 cycles)" if results["steady_p99_is_max"] else "")
        _row(
            table,
            p99_label,
            f"{results['steady_cycle_p99_s']:.3f} s",
            limits["steady_cycle_p99_s"],
            marks["steady_cycle_p99_s"],
        )
        _row(
            table,
            "steady p50: snapshot / decide",
            f"{results['steady_snapshot_p50_s']:.3f} / {results['steady_decide_p50_s']:.3f} s",
        )
        _row(
            table,
            "steady CPU time p50 / p99",
            f"{results['steady_cpu_p50_s']:.3f} / {results['steady_cpu_p99_s']:.3f} s",
        )
        _row(
            table,
            f"steady: {results['steady_cycles']} cycles placed / preempted",
            f"{results['steady_placed_total']:,} / {results['steady_preempted_total']:,}",
        )
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(results["steady_preempt_reasons"].items()))
        if reasons:
            _row(table, "steady: preemptions by reason", reasons)
    _row(table, "peak RSS", f"{results['peak_rss_mb']:,.0f} MiB", limits["peak_rss_mb"], marks["peak_rss_mb"])
    violations = results["invariant_violations"]
    _row(
        table,
        "invariant violations",
        f"{violations:,}",
        "0",
        "[green]none[/]" if violations == 0 else "[red]see --json[/]",
    )
    console.print(table)
    if not results["at_target_size"]:
        size = ", ".join(f"--{k} {v:,}" for k, v in TARGET_SIZE.items())
        console.print(f"[dim]Targets are set for {size}; this run is another size.[/]")
    m = results["machine"]
    console.print(
        f"[dim]{m['cpu_count']} CPUs (load {m['load_average_1m_at_start']:.1f} at start, "
        f"{m['load_average_1m']:.1f} at end), Python {m['python_version']}: {results['command']}[/]"
    )
