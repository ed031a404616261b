"""Speed work must not change a single decision: replays pinned against the code before it.

The fixtures in ``fixtures/`` were first written by the code at commit 29dd8e3 (before
the simulator and the core were made incremental), with this module run as a script on a
copy of that commit's ``scheduler/`` and ``quota/``::

    git archive 29dd8e3 scheduler quota | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base:. .venv/bin/python -m tests.sim.test_same_decisions tests/sim/fixtures

They were rewritten once on purpose, by the tree itself, when the fair order changed
(issue 5: an org whose next job would borrow but a later one fits within its nominal goes
before orgs that only borrow; see ``core/ordering.py``) and the summaries gained
``guarantee_waits``: on the synthetic workload `kueue`'s and `trainpool`'s decisions
changed; on the VC slice no decision changed. And once more when Tiresias' preemption
became the core's ``least_attained`` action (issue 14): its preemptions are now among the
cycle's decisions, so `tiresias`'s digests changed, and its preemptions are counted under
the reason ``service`` instead of ``tiresias``; every other number of every summary, and
every other policy's digest, stayed the same. And when trainpool's default ranked an
org's jobs by highest response ratio instead of age (issue 14, ``WithinOrg``): only
`trainpool`'s summaries and digests changed (synthetic average JCT 3.89 h -> 3.05 h).
And when the digest stopped covering the wording of pending messages (issue 19: the
reserved head gang names the release its estimate rests on): written by the code of
9064d57 and of the tree after that change, the two digests were equal, and the summaries
the same as before. And when the simulator began to requeue a gang hit by a node failure
as the service does (issue 15, ``values.restarts.returning``: first in its org, offered
the nodes it kept, kept off the failed one), where before it requeued it like any other:
every policy's digests changed on both workloads. On the synthetic one (frequent
failures) trainpool's owed waits over the allowance went 15 -> 10 (longest 3,685 s ->
2,341 s) for more reclaims (83 -> 124) and an average JCT 4% higher (13,267 s -> 13,813
s); on the VC slice every figure moved by under 8%. A rewrite is for a decision change
meant and explained, never to make a speed change pass. The digest's form changed once
without a decision changing (issue 15: preemptions gained ``keep`` and ``resize_to``, a
resize's kept ranks and size, and their messages left the digest): before rewriting,
the tree's replays were checked against the old digests computed in the old form.
The summaries gained keys twice without a decision changing (issue 16: the failure
summary's ``hangs`` and ``lost_hang_acc_h``, then ``stragglers`` and
``lost_straggler_acc_h``, all zero here since neither workload models them): every digest
was equal before and after, and every other figure the same.

For each policy they hold the JSON summary (``wall_s`` and the scored ``estimates`` left
out) and a
SHA-256 over every cycle's time and decisions (placements with their nodes, preemptions
with their beneficiaries and kept ranks, reservations, rejections, and every pending job's reason,
estimate and blocker, not the wording of its message), so a
change that moves one job to another node, or one reason, in one cycle fails here. The
summary is compared through JSON, exactly (floats included): the same decisions in the same
order give the same arithmetic.

Two workloads: a synthetic one written here (always runs: a small pool under heavy load,
frequent node failures, an org without quota that only borrows, gangs of two nodes), and a
slice of the real VC trace (skipped where ``../shared/traces`` is absent; no trace rows are
stored, only the summaries).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler.sim.run import SimRequest, run
from values.decisions import Decisions
from values.snapshot import Snapshot

from .helpers import random_rows, write_quotas, write_vc_trace

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
CANDIDATES = (Path("/work/shared/traces"), REPO.parent / "shared" / "traces")
TRACES = next((p for p in CANDIDATES if (p / "philly_vc_subset_TUNE_days0-75.csv").is_file()), None)
ORGS = ("aa", "bb", "cc", "dd")
QUOTAS = {"aa": 3, "bb": 2, "cc": 1}  # dd has no row: nominal 0, it may only borrow


def synthetic_request(folder: Path) -> SimRequest:
    trace = write_vc_trace(folder / "synthetic.csv", random_rows(400, ORGS, seed=7))
    quotas = write_quotas(folder / "quotas.csv", QUOTAS)
    return SimRequest(
        trace=trace, quotas=quotas, policy="all", load=1.3, failures="mtbf=40000", rack_size=2, seed=3
    )


def vc_slice_request() -> SimRequest:
    assert TRACES is not None
    return SimRequest(
        trace=TRACES / "philly_vc_subset_TUNE_days0-75.csv",
        quotas=TRACES / "philly_vc_quota_helios_artifact.csv",
        policy="all",
        load=1.2,
        max_jobs=2000,
    )


class DecisionDigest:
    """Hashes every cycle's decisions, in cycle order, one digest per policy."""

    def __init__(self) -> None:
        self.digests: list[Any] = []

    def start(self) -> Callable[[Snapshot, float, Decisions], None]:
        h = hashlib.sha256()
        self.digests.append(h)

        def observe(snap: Snapshot, now: float, dec: Decisions) -> None:
            # Reasons, estimates, blockers and a resize's kept ranks are decisions; the
            # messages' wording is not.
            pending = sorted((k, (v.reason, v.estimated_start, v.blocked_by)) for k, v in dec.pending.items())
            stops = [(p.job_id, p.reason, p.beneficiary, p.keep, p.resize_to) for p in dec.preemptions]
            h.update(repr((now, dec.placements, stops, dec.reservations, dec.rejections)).encode())
            h.update(repr(pending).encode())

        return observe


def replay(req: SimRequest) -> dict[str, Any]:
    from scheduler.sim import engine

    digest = DecisionDigest()
    original = engine.Simulation.__init__

    def init(self: engine.Simulation, *args: Any, **kwargs: Any) -> None:
        kwargs["observer"] = digest.start()
        original(self, *args, **kwargs)

    engine.Simulation.__init__ = init  # type: ignore[method-assign]
    try:
        out = run(req)
    finally:
        engine.Simulation.__init__ = original  # type: ignore[method-assign]
    # Left out: the wall time, and the scored start estimates (predictions about the
    # decisions, pinned by their own tests; they change when the forecast improves).
    summaries = [{k: v for k, v in s.items() if k not in ("wall_s", "estimates")} for s in out.summaries]
    return {
        "summaries": json.loads(json.dumps(summaries)),
        "decision_sha256": [h.hexdigest() for h in digest.digests],
    }


def expected(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for g, w in zip(got["summaries"], want["summaries"], strict=True):
        assert g == w, f"summary of {w['policy']} changed"
    assert got["decision_sha256"] == want["decision_sha256"]


@pytest.mark.slow
def test_a_synthetic_replay_makes_the_same_decisions_as_before(tmp_path: Path) -> None:
    got = replay(synthetic_request(tmp_path))
    assert {s["policy"] for s in got["summaries"]} == {"fifo", "slurm", "kueue", "tiresias", "trainpool"}
    assert sum(s["preemptions"]["total"] for s in got["summaries"]) > 0  # the pinned path is exercised
    assert_same(got, expected("same_decisions_synthetic.json"))


@pytest.mark.slow
@pytest.mark.skipif(TRACES is None, reason="the Philly traces are not in ../shared/traces here")
def test_a_slice_of_the_vc_trace_makes_the_same_decisions_as_before() -> None:
    assert_same(replay(vc_slice_request()), expected("same_decisions_vc_slice.json"))


if __name__ == "__main__":  # writes the fixtures (see the docstring for when and how)
    import tempfile

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        got = replay(synthetic_request(Path(tmp)))
        (out / "same_decisions_synthetic.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if TRACES is not None:
        got = replay(vc_slice_request())
        (out / "same_decisions_vc_slice.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
