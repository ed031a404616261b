"""The organizations dashboard's generated JSON: `$org` and `$flavor` variables that every
query uses, usage per org and flavor (flavors never summed together) and the nominal
quota as a dashed line. The checks read the JSON Grafana imports, not the specs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from scheduler.metrics import Metrics
from scheduler.observability.dashboards import ORGS, expand

ROOT = Path(__file__).resolve().parents[2]
SELECTOR = re.compile(r"\b(trainpool_\w+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
AGGREGATION = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk)\s*(?:by\s*\(([^)]*)\))?\s*\("
)
LABEL_VALUES = re.compile(r"^label_values\((trainpool_\w+(?:\{[^}]*\})?),\s*(\w+)\)$")


def _label_names() -> dict[str, set[str]]:
    """Each trainpool metric's labels, from the one place that defines them."""
    metrics = Metrics()
    return {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


LABELS = _label_names()


def _base(sample: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created"):
        if sample.endswith(suffix) and sample.removesuffix(suffix) in LABELS:
            return sample.removesuffix(suffix)
    return sample


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: "op value"}) for each trainpool selector in ``expr``."""
    return [
        (_base(m.group(1)), {k: f"{op}{v}" for k, op, v in MATCHER.findall(m.group(2) or "")})
        for m in SELECTOR.finditer(expr)
    ]


def filter_problems(expr: str) -> list[str]:
    """Selectors in ``expr`` that do not filter by the variables their metric has labels for."""
    problems = []
    for metric, matchers in selectors(expr):
        assert metric in LABELS, f"{metric}: not a metric of scheduler/metrics.py"
        for var in ("org", "flavor"):
            if var in LABELS[metric] and matchers.get(var) != f"=~${var}":
                problems.append(f'{metric} lacks {var}=~"${var}"')
    return problems


def flavor_sums(expr: str) -> list[str]:
    """Aggregations in ``expr`` over a metric with a flavor label that drop the flavor."""
    if not any("flavor" in LABELS[m] for m, _ in selectors(expr)):
        return []
    return [
        m.group(0)
        for m in AGGREGATION.finditer(expr)
        if "flavor" not in {x.strip() for x in (m.group(2) or "").split(",")}
    ]


@pytest.fixture(scope="module")
def orgs() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana" / f"{ORGS.uid}.json").read_text())
    return data


def _targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in board["panels"] if p["type"] != "row" for t in p.get("targets", [])]


def test_org_dashboard_has_multi_select_org_and_flavor_variables(orgs: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in orgs["templating"]["list"]}
    for name in ("org", "flavor"):
        assert name in variables, f"no ${name} variable"
        v = variables[name]
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == "${datasource}"
        assert v["multi"] is True and v["includeAll"] is True
        assert v["allValue"] == ".*"
        assert v["current"]["value"] == ["$__all"], "opens on All"
        found = LABEL_VALUES.match(v["query"])
        assert found, f"${name}: {v['query']!r} is not label_values over a trainpool metric"
        metric, label = found.groups()
        assert label == name
        assert name in LABELS[_base(metric.split("{")[0])], f"{metric} has no {name} label"
    # The flavors offered are those of the selected orgs.
    assert 'org=~"$org"' in variables["flavor"]["query"]


def test_every_org_dashboard_query_filters_by_the_variables(orgs: dict[str, Any]) -> None:
    targets = _targets(orgs)
    assert targets
    problems = [f"{title}: {p}" for title, t in targets for p in filter_problems(t["expr"])]
    assert problems == []


def test_org_dashboard_never_sums_flavors_together(orgs: dict[str, Any]) -> None:
    sums = [f"{title}: {s}" for title, t in _targets(orgs) for s in flavor_sums(t["expr"])]
    assert sums == []


def _usage_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p
        for p in board["panels"]
        if any("trainpool_running_accelerators" in t["expr"] for t in p.get("targets", []))
        and any('kind="nominal"' in t["expr"] for t in p.get("targets", []))
    ]


def test_org_dashboard_draws_usage_per_org_and_flavor_against_a_dashed_nominal(orgs: dict[str, Any]) -> None:
    panels = _usage_panels(orgs)
    assert len(panels) == 1, "one panel of usage against nominal"
    panel = panels[0]
    assert panel["type"] == "timeseries"
    assert panel.get("repeat") == "flavor", "one copy per flavor: each flavor on its own scale"
    for t in panel["targets"]:
        assert "{{org}}" in t["legendFormat"] and "{{flavor}}" in t["legendFormat"]
        assert all("by (org, flavor)" in m.group(0) for m in AGGREGATION.finditer(t["expr"])), t["expr"]
    used = [t["refId"] for t in panel["targets"] if "trainpool_running_accelerators" in t["expr"]]
    nominal = [t["refId"] for t in panel["targets"] if t["refId"] not in used]
    assert len(used) == 1 and len(nominal) == 1
    assert 'kind="nominal"' in next(t["expr"] for t in panel["targets"] if t["refId"] == nominal[0])

    def dashed(ref: str) -> bool:
        return any(
            o["matcher"] == {"id": "byFrameRefID", "options": ref}
            and any(
                prop["id"] == "custom.lineStyle"
                and prop["value"].get("fill") == "dash"
                and prop["value"].get("dash")
                for prop in o["properties"]
            )
            for o in panel["fieldConfig"]["overrides"]
        )

    assert dashed(nominal[0]), "nominal is not drawn dashed"
    assert not dashed(used[0]), "usage is drawn dashed too"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('sum by (org) (trainpool_running_accelerators{org=~"$org", flavor=~"$flavor"})', "sum"),
        ('sum(trainpool_pending_jobs{org=~"$org", flavor=~"$flavor"})', "sum"),
        ("sum by (org, flavor) (trainpool_running_accelerators)", "filter"),
        ('sum by (org, flavor) (trainpool_running_accelerators{org=~"$org"})', "filter"),
        ("trainpool_fair_share", "filter"),
    ],
)
def test_the_checks_catch_a_dashboard_that_sums_flavors_or_ignores_the_variables(
    expr: str, problem: str
) -> None:
    assert (flavor_sums(expr) if problem == "sum" else filter_problems(expr)) != []


def test_the_checks_accept_org_only_metrics_filtered_by_org() -> None:
    expr = 'sum by (org) (rate(trainpool_job_wait_seconds_bucket{org=~"$org"}[$__rate_interval]))'
    assert filter_problems(expr) == [] and flavor_sums(expr) == []


def test_expand_substitutes_each_variable_and_refuses_unknown_ones() -> None:
    expr = 'rate(x{org=~"$org", flavor=~"${flavor}"}[$__rate_interval])'
    assert expand(expr, {"org": "a", "flavor": ".*"}) == 'rate(x{org=~"a", flavor=~".*"}[30s])'
    with pytest.raises(KeyError):
        expand(expr, {"org": "a"})
