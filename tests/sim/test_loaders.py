"""Trace and quota loaders on tiny files written here, in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.sim.pool import assign_orgs, gang_shape, pool_from_quotas
from scheduler.sim.quotas import load_quotas
from scheduler.sim.trace import TraceError, TraceJob, formats, load_trace

from .helpers import write_philly_trace, write_quotas, write_vc_trace


def test_philly_vc_rows_become_jobs_of_their_tenant_sorted_by_submit(tmp_path: Path) -> None:
    trace = write_vc_trace(
        tmp_path / "t.csv",
        [
            ("7", "ab12cd", 50, 8, 3600),
            ("3", "ee9e8c", 10, 1, 5),
            ("4", "ee9e8c", 50, 16, 9),
        ],
    )
    jobs = load_trace(trace, "philly-vc")
    assert jobs == [
        TraceJob("3", "ee9e8c", 10.0, 1, 5.0),
        TraceJob("4", "ee9e8c", 50.0, 16, 9.0),  # same submit time: numeric id order
        TraceJob("7", "ab12cd", 50.0, 8, 3600.0),
    ]


def test_philly_full_format_reads_size_and_duration_and_leaves_the_tenant_open(tmp_path: Path) -> None:
    trace = write_philly_trace(tmp_path / "p.csv", [("0", 0.0, 1, 3613033), ("1", 266563.0, 4, 12.5)])
    jobs = load_trace(trace, "philly")
    assert [(j.id, j.org, j.submit, j.gpus, j.duration) for j in jobs] == [
        ("0", "philly", 0.0, 1, 3613033.0),
        ("1", "philly", 266563.0, 4, 12.5),
    ]


def test_both_formats_are_registered_plugins() -> None:
    assert {"philly", "philly-vc"} <= set(formats())


HEADER = "job_id,vc,submit_time_s,num_gpus,duration_s\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("job_id,vc,submit_time_s,num_gpus\n1,a,0,1\n", "missing column(s) duration_s"),
        # the line number and the field are named
        (HEADER + "1,a,zero,1,5\n", ":2: submit_time_s: 'zero' is not a number"),
        (HEADER + "1,a,0,0,5\n", "num_gpus: must be a whole number >= 1"),
        (HEADER + "1,a,0,1,-5\n", "duration_s: must be a finite number >= 0"),
        (HEADER + "1,a,0,1,5\n1,a,0,1,5\n", "job_id: '1' appears twice"),
        (HEADER + "", "the trace has no jobs"),
    ],
)
def test_bad_trace_files_name_the_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_trace(path, "philly-vc")


def test_unknown_format_and_missing_file_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="unknown trace format 'alibaba'"):
        load_trace(tmp_path / "x.csv", "alibaba")
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(tmp_path / "missing.csv", "philly")


def test_quota_file_gives_nodes_per_tenant_and_the_pool_turns_them_into_accelerators(tmp_path: Path) -> None:
    quotas = load_quotas(write_quotas(tmp_path / "q.csv", {"aa": 3, "bb": 1}))
    assert quotas == {"aa": 3, "bb": 1}
    pool = pool_from_quotas(quotas, trace_orgs={"aa", "cc"}, node_size=8, rack_size=2, racks_per_spine=1)
    assert pool.capacity == 32 and len(pool.nodes) == 4
    assert {o.name: o.quota(pool.flavor).nominal for o in pool.orgs} == {"aa": 24, "bb": 8, "cc": 0}
    assert [n.topology.rack for n in pool.nodes] == ["rack-0", "rack-0", "rack-1", "rack-1"]
    assert [n.topology.spine for n in pool.nodes] == ["spine-0", "spine-0", "spine-1", "spine-1"]


def test_bad_quota_rows_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("vc,node num\naa,two\n")
    with pytest.raises(TraceError, match="node num: must be a whole number"):
        load_quotas(path)
    path.write_text("tenant,size\naa,2\n")
    with pytest.raises(TraceError, match="expected columns"):
        load_quotas(path)


@pytest.mark.parametrize(
    ("gpus", "shape"),
    [
        (1, (1, 1)),
        (7, (1, 7)),
        (8, (1, 8)),
        (12, (2, 6)),
        (16, (2, 8)),
        (20, (4, 5)),
        (64, (8, 8)),
    ],
)
def test_jobs_above_one_node_become_gangs_of_equal_replicas_that_fit_a_node(
    gpus: int, shape: tuple[int, int]
) -> None:
    assert gang_shape(gpus, 8) == shape


def test_tenantless_jobs_are_spread_over_tenants_by_quota_deterministically() -> None:
    jobs = [TraceJob(str(i), "philly", float(i), 1, 10.0) for i in range(4000)]
    first = assign_orgs(jobs, {"big": 3, "small": 1, "none": 0}, seed=7)
    again = assign_orgs(list(reversed(jobs)), {"big": 3, "small": 1, "none": 0}, seed=7)
    assert {j.id: j.org for j in first} == {j.id: j.org for j in again}
    share_big = sum(j.org == "big" for j in first) / len(first)
    assert 0.72 < share_big < 0.78
    assert not any(j.org == "none" for j in first)
