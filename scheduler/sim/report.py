"""The summary of a replay: one JSON object per policy and a Markdown table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scheduler.sim import accuracy, metrics
from scheduler.sim.failures import FailureModel, young_daly_loss
from scheduler.sim.record import SimResult


def summarize(
    result: SimResult, model: FailureModel, description: str, allowance_s: float = 0.0
) -> dict[str, Any]:
    jobs = result.jobs
    tl = result.timeline.arrays()
    window = metrics.arrival_window(jobs)
    load = metrics.offered_load(jobs, result.capacity, window)
    fair = metrics.shares(tl, result.capacity, result.nominal, result.weights, window)
    done = metrics.completed(jobs)
    yd = young_daly_loss([(j.accelerators, j.nodes, j.duration) for j in done], model) / 3600
    rejected: dict[str, int] = {}
    for j in jobs:
        if j.rejected:
            rejected[j.rejected] = rejected.get(j.rejected, 0) + 1
    return {
        "policy": result.policy,
        "description": description,
        "jobs": len(jobs),
        "completed": len(done),
        "rejected": rejected,
        "unfinished": result.unfinished,
        "jct_s": metrics.jct_stats(jobs),
        "queueing_s": metrics.queueing_stats(jobs),
        "slowdown": metrics.slowdown_stats(jobs),
        "utilization": {
            "while_pending": metrics.utilization_while_pending(tl, result.capacity),
            "arrival_window": metrics.utilization_in_window(tl, result.capacity, window),
            "bound": min(1.0, load),
            "window_bound": metrics.window_bound(jobs, result.capacity, window),
            "offered_load": load,
        },
        "makespan_s": metrics.makespan(jobs),
        "fairness": fair,
        "guarantee_violations": metrics.guarantee_violations(tl, allowance_s),
        "guarantee_waits": metrics.guarantee_waits(tl, result.nominal, result.capacity, allowance_s),
        "preemptions": {"total": sum(result.preemptions.values()), "by_reason": result.preemptions},
        **({"resizes": result.resizes} if result.resizes else {}),
        "failures": {
            "node_failures_hitting_jobs": result.node_failures,
            **metrics.losses(jobs),
            "young_daly_expected_failure_acc_h": yd,
        },
        "cycles": result.cycles,
        "wall_s": result.wall_s,
        "estimates": _estimates(result),
    }


def _estimates(result: SimResult) -> dict[str, Any] | None:
    if result.forecasts is None:
        return None
    return {
        "at_submit": accuracy.accuracy(result.jobs, "submit"),
        "an_hour_later": accuracy.accuracy(result.jobs, "later"),
        "forecasts": dict(result.forecasts),
    }


def _h(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds / 3600:,.2f}"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def markdown(summaries: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"# trainpool sim: {header['trace']}",
        "",
        f"- format `{header['format']}`, load {header['load']}, seed {header['seed']}, "
        f"cycle interval {header['interval_s']:g} s, capacity {header['capacity']} accelerators "
        f"on {header['nodes']} nodes",
        f"- failure model: {header['failure_model']}",
        f"- command: `{header['command']}`",
        "",
        "| policy | avg JCT h | median JCT h | p99 JCT h | avg wait h | p99 wait h | slowdown avg / median "
        "| util (pending) | util (window) | bound min(1, load) | window bound | makespan d |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        j, q, sd, u = s["jct_s"], s["queueing_s"], s["slowdown"], s["utilization"]
        lines.append(
            f"| {s['policy']} | {_h(j['avg'])} | {_h(j['median'])} | {_h(j['p99'])} | {_h(q['avg'])} "
            f"| {_h(q['p99'])} | {sd['avg']:.2f} / {sd['median']:.2f} | {_pct(u['while_pending'])} "
            f"| {_pct(u['arrival_window'])} | {_pct(u['bound'])} | {_pct(u['window_bound'])} "
            f"| {s['makespan_s'] / 86400:.1f} |"
        )
    lines += [
        "",
        "| policy | max share dev (pp) | Jain | guarantee viol (org-h) | longest viol (s) | viol > allowance "
        "| longest owed wait (s) | owed waits > allowance (feasible / infeasible) | preemptions "
        "| lost to failures (acc-h) | Young/Daly expected (acc-h) | lost to preemption (acc-h) "
        "| hangs (lost acc-h) | straggler moves (lost acc-h) | goodput (ETTR) | rejected | unfinished |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        f, g, fl, w = s["fairness"], s["guarantee_violations"], s["failures"], s["guarantee_waits"]
        rejected = sum(s["rejected"].values())
        lines.append(
            f"| {s['policy']} | {100 * f['max_deviation']:.2f} | {f['jain']:.3f} | {_h(g['org_seconds'])} "
            f"| {g['longest_s']:,.0f} | {g['episodes_over_allowance']} | {w['longest_wait_s']:,.0f} "
            f"| {w['waits_over_allowance_feasible']} / {w['waits_over_allowance_infeasible']} "
            f"| {s['preemptions']['total']} "
            f"| {fl['lost_failure_acc_h']:,.0f} "
            f"| {fl['young_daly_expected_failure_acc_h']:,.0f} | {fl['lost_preemption_acc_h']:,.0f} "
            f"| {fl['hangs']} ({fl['lost_hang_acc_h']:,.0f}) "
            f"| {fl['stragglers']} ({fl['lost_straggler_acc_h']:,.0f}) "
            f"| {_pct(fl['goodput'])} | {rejected} | {s['unfinished']} |"
        )
    lines += _estimate_table(summaries)
    lines += ["", "Policies:"]
    lines += [f"- `{s['policy']}`: {s['description']}" for s in summaries]
    lines += ["", "Metric definitions:", "", *_definitions()]
    return "\n".join(lines) + "\n"


def _estimate_table(summaries: Sequence[dict[str, Any]]) -> list[str]:
    rows = [s for s in summaries if s.get("estimates")]
    if not rows:
        return []
    lines = [
        "",
        "Start estimates (error = estimated - actual first start; positive: pessimistic; "
        "relative to the lead, actual start - when estimated):",
        "",
        "| policy | when | which jobs | n | median abs error h | median rel error | within 15 min "
        "| within 25% | bias h | in range | unknown | forecasts | steps (max) | forecast s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        e = s["estimates"]
        fc = e["forecasts"]
        for when, key in (("submit", "at_submit"), ("1 h later", "an_hour_later")):
            for group, label in (("waited_over_10m", "waited > 10 min"), ("all", "all")):
                f = {k: math.nan if v is None else v for k, v in e[key][group].items()}
                lines.append(
                    f"| {s['policy']} | {when} | {label} | {f['jobs']} | {_h(f['median_abs_error_s'])} "
                    f"| {_pct(f['median_rel_error'])} | {_pct(f['within_15m'])} | {_pct(f['within_25pct'])} "
                    f"| {_h(f['bias_s'])} | {_pct(f['in_range'])} | {f['unknown']} | {fc['forecasts']:,.0f} "
                    f"| {fc['steps']:,.0f} ({fc['most_steps']:.0f}) | {fc['wall_s']:,.1f} |"
                )
    return lines


def _definitions() -> list[str]:
    doc = metrics.__doc__ or ""
    body = doc.split("Definitions (also printed in the report):", 1)[-1]
    more = (accuracy.__doc__ or "").split("Definitions (also printed in the report):", 1)[-1]
    return [line.rstrip() for line in (body.strip() + "\n" + more.strip()).splitlines()]
