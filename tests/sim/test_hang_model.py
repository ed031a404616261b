"""The simulator's hang and straggler models: presets, bad input, the same draws for every policy."""

from __future__ import annotations

import pytest

from scheduler.sim.failures import FailureModel, FailureSpecError, with_hangs, with_stragglers

BASE = FailureModel("none", None)


def test_llama3_hangs_are_its_nccl_watchdog_timeouts_per_gpu() -> None:
    m = with_hangs(BASE, "llama3", node_size=8, detect_s=600.0, undetected_s=7200.0)
    assert m.hang_node_mtbf_s == pytest.approx(54 * 86_400 * 16_384 / 7 / 8)
    assert "7 NCCL watchdog timeouts" in m.describe() and "stopped 600 s after" in m.describe()
    off = with_hangs(BASE, "llama3", node_size=8, detect_s=None, undetected_s=7200.0)
    assert (off.hang_lasts_s, "(no detection)" in off.describe()) == (7200.0, True)


def test_a_hang_is_drawn_per_job_and_attempt_from_the_seed_alone() -> None:
    m = with_hangs(BASE, "mtbf=86400", node_size=8, detect_s=600.0, undetected_s=7200.0)
    first = m.first_hang(0, "j1", 0, nodes=2)
    assert first == m.first_hang(0, "j1", 0, nodes=2)  # whichever policy asks
    assert first != m.first_hang(0, "j1", 1, nodes=2) and first != m.first_hang(1, "j1", 0, nodes=2)
    assert with_hangs(BASE, "none", 8, 600.0, 7200.0).first_hang(0, "j1", 0, 2) is None


@pytest.mark.parametrize(
    ("spec", "detect", "problem"),
    [("often", 600.0, "--hangs: unknown model 'often'"), ("mtbf=0", 600.0, "--hangs: mtbf= needs"),
     ("none", -1.0, "--hang-detect: must be >= 0")],
)  # fmt: skip
def test_a_bad_hang_model_names_its_option(spec: str, detect: float, problem: str) -> None:
    with pytest.raises(FailureSpecError, match=problem):
        with_hangs(BASE, spec, 8, detect, 7200.0)


def test_a_straggler_is_drawn_per_job_and_attempt_with_its_node() -> None:
    m = with_stragglers(BASE, "mtbf=86400", slowdown=1.5, detect_s=300.0)
    first = m.first_slow(0, "j1", 0, nodes=4)
    assert first is not None and first == m.first_slow(0, "j1", 0, nodes=4)
    assert 0 <= first[1] < 4 and first != m.first_slow(0, "j1", 1, nodes=4)
    assert "1.5x slower, moved at break-even" in m.describe()
    assert "never moved (no detection)" in with_stragglers(BASE, "mtbf=86400", 1.5, None).describe()
    assert with_stragglers(BASE, "none", 2.0, 300.0).first_slow(0, "j1", 0, 4) is None
    assert "straggler" not in BASE.describe()  # off: the description is as before


@pytest.mark.parametrize(
    ("spec", "slowdown", "detect", "problem"),
    [("sometimes", 2.0, 300.0, "--stragglers: unknown model"), ("mtbf=-5", 2.0, 300.0, "--stragglers: mtbf="),
     ("none", 1.0, 300.0, "--straggler-slowdown: must be > 1"), ("none", 2.0, -1.0, "--straggler-detect")],
)  # fmt: skip
def test_a_bad_straggler_model_names_its_option(
    spec: str, slowdown: float, detect: float, problem: str
) -> None:
    with pytest.raises(FailureSpecError, match=problem):
        with_stragglers(BASE, spec, slowdown, detect)
