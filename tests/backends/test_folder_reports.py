"""Progress records become rank reports with the node each rank runs on."""

from __future__ import annotations

from scheduler.backends.folder_reports import rank_reports
from values.progress import RankReport


def test_each_rank_is_on_the_node_it_wrote_if_that_is_one_of_the_gangs() -> None:
    nodes = ["n0", "n1"]  # two replicas; torchrun runs two ranks on each
    records = [
        {"rank": 0, "step": 9, "step_seconds": 0.5, "node": "n0"},
        {"rank": 3, "step": 9, "step_seconds": 0.9, "node": "n1"},  # past the replicas: only its own word
        {"rank": 1, "step": 9, "step_seconds": 0.5, "node": None},  # an older SDK: its replica's
        {"rank": 2, "step": 9, "step_seconds": 0.5, "node": "someone-elses"},  # not believed
        {"rank": 5, "step": 9, "step_seconds": 0.5},
    ]
    assert rank_reports(records, nodes) == (
        RankReport(0, 9, 0.5, "n0"),
        RankReport(3, 9, 0.9, "n1"),
        RankReport(1, 9, 0.5, "n1"),
        RankReport(2, 9, 0.5, None),
        RankReport(5, 9, 0.5, None),
    )
