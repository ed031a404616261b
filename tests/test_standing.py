"""Who lends to whom, as `quota show` tells it: borrowing comes first from capacity no org
is entitled to, then from lenders in proportion to their idle lendable quota; the amounts
always add up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quota.standing import UNASSIGNED, apportion, standings
from values.quotas import FlavorQuota, Org


def org(name: str, nominal: int, lending: int | None = None) -> Org:
    return Org(name=name, quotas={"h100": FlavorQuota(nominal=nominal, lending_limit=lending)})


def test_a_borrower_draws_on_unassigned_capacity_before_anyone_s_quota() -> None:
    got = standings([org("a", 16), org("b", 8)], {"h100": 32}, {("b", "h100"): 20})
    assert got[("b", "h100")].borrowed == 12
    assert got[("b", "h100")].borrowed_from == {UNASSIGNED: 8, "a": 4}
    assert got[("a", "h100")].lent_to == {"b": 4} and got[("a", "h100")].lent == 4


def test_lenders_lend_in_proportion_to_what_they_leave_idle() -> None:
    got = standings([org("a", 16), org("b", 8), org("c", 8)], {"h100": 32},
                    {("c", "h100"): 20, ("b", "h100"): 4})  # fmt: skip
    # a idles 16, b idles 4: c's 12 borrowed come 4:1 from them (largest remainder).
    assert got[("c", "h100")].borrowed_from == {"a": 10, "b": 2}
    assert (got[("a", "h100")].lent, got[("b", "h100")].lent) == (10, 2)


def test_a_lending_limit_caps_what_is_counted_as_lent() -> None:
    got = standings([org("a", 16, lending=4), org("b", 0)], {"h100": 20}, {("b", "h100"): 8})
    assert got[("b", "h100")].borrowed_from == {UNASSIGNED: 4, "a": 4}
    assert got[("a", "h100")].lent == 4


def test_an_org_within_its_nominal_borrows_nothing() -> None:
    got = standings([org("a", 16)], {"h100": 16}, {("a", "h100"): 16})
    assert got[("a", "h100")] == got[("a", "h100")].__class__(nominal=16, in_use=16, borrowed=0, lent=0)


@given(st.integers(0, 50), st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 9)))
def test_apportion_adds_up(total: int, weights: dict[str, int]) -> None:
    parts = apportion(total, weights)
    assert sum(parts.values()) == (total if sum(weights.values()) else 0)
    assert all(weights[k] > 0 for k in parts)


@given(
    st.lists(st.tuples(st.integers(0, 16), st.one_of(st.none(), st.integers(0, 16)), st.integers(0, 24)),
             min_size=1, max_size=5),
    st.integers(0, 64),
)  # fmt: skip
def test_lent_equals_borrowed_and_no_lender_lends_more_than_it_idles(
    rows: list[tuple[int, int | None, int]], spare: int
) -> None:
    orgs = [
        org(f"o{i}", n, min(lend, n) if lend is not None else None) for i, (n, lend, _) in enumerate(rows)
    ]
    held = {(f"o{i}", "h100"): h for i, (_, _, h) in enumerate(rows)}
    cap = sum(n for n, _, _ in rows) + spare
    got = standings(orgs, {"h100": cap}, held)
    lent = sum(s.lent for s in got.values())
    drawn = sum(k for s in got.values() for src, k in s.borrowed_from.items() if src != UNASSIGNED)
    assert lent == drawn
    for (name, _), s in got.items():
        assert sum(s.borrowed_from.values()) <= s.borrowed
        assert s.lent <= max(0, s.nominal - s.in_use)
        assert all(got[(b, "h100")].borrowed_from.get(name) == k for b, k in s.lent_to.items())
