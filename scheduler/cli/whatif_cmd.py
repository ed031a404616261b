"""`trainpool whatif`: the live pool (or a saved snapshot of it) replayed for the next
hours as it is and with a change, org by org, side by side (``sim/whatif.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.client import (
    ClientError,
    ContextOpt,
    OutOpt,
    Output,
    TokenOpt,
    UrlOpt,
    connect,
    emit,
    err,
    friendly,
)
from values.quotas import FlavorQuota


def _quota(text: str) -> tuple[tuple[str, str], FlavorQuota]:
    """``org:flavor=nominal[,borrowing_limit[,lending_limit]]`` (an empty limit: none)."""
    key, sep, values = text.partition("=")
    org, colon, flavor = key.partition(":")
    parts = values.split(",")
    if not (sep and colon and org and flavor) or len(parts) > 3:
        raise ClientError(
            f"--set-quota: '{text}' is not org:flavor=nominal[,borrowing_limit[,lending_limit]]"
        )
    try:
        nums = [int(p) if p else None for p in parts] + [None] * (3 - len(parts))
        if nums[0] is None:
            raise ValueError
        return (org, flavor), FlavorQuota(nominal=nums[0], borrowing_limit=nums[1], lending_limit=nums[2])
    except ValueError as exc:
        raise ClientError(f"--set-quota: '{text}': {exc or 'the nominal must be a whole number'}") from None


def _count(text: str) -> tuple[str, int]:
    flavor, sep, count = text.partition(":")
    if not (sep and flavor and count.isdigit() and 0 < int(count) <= 10_000):
        raise ClientError(f"--add-nodes: '{text}' is not flavor:count (1 to 10000)")
    return flavor, int(count)


@friendly
def whatif(
    snapshot_file: Annotated[
        Path | None, typer.Option("--snapshot", help="Replay a saved snapshot instead of the live pool.")
    ] = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Write the live snapshot here (no secrets).")
    ] = None,
    set_quota: Annotated[
        list[str] | None,
        typer.Option("--set-quota", help="org:flavor=nominal[,borrowing_limit[,lending_limit]]; repeatable."),
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Another policy: fifo, slurm, kueue, trainpool.")
    ] = None,
    drain: Annotated[str | None, typer.Option("--drain", help="Nodes to cordon: n1,n2.")] = None,
    add_nodes: Annotated[
        list[str] | None,
        typer.Option("--add-nodes", help="flavor:count, nodes shaped like the flavor's; repeatable."),
    ] = None,
    hours: Annotated[float, typer.Option("--hours", min=0.1, max=24 * 30, help="How far to replay.")] = 24.0,
    plot_to: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of each org's holdings, as is and changed.")
    ] = None,
    output: OutOpt = Output.table,
    url: UrlOpt = None,
    token: TokenOpt = None,
    context: ContextOpt = None,
) -> None:
    """Replay the pool's next hours as it is and with a change: per org waits, preemptions, shares."""
    from scheduler.sim.policies import get_policy
    from scheduler.sim.policies.base import CorePolicy
    from scheduler.sim.whatif import Change, ChangeError, apply_change, replay, side_by_side
    from values.errors import ConfigError
    from values.snapshot_file import SnapshotFile, load

    if snapshot_file is not None:
        try:
            saved = load(snapshot_file.read_text(), str(snapshot_file))
        except OSError as exc:
            raise ClientError(f"--snapshot: cannot read {snapshot_file} ({exc.strerror})") from None
        except ConfigError as exc:
            raise ClientError("; ".join(exc.lines())) from None
    else:
        body = connect(url, token, context).get("/v1/snapshot")
        saved = SnapshotFile.model_validate(body)
        if save is not None:
            save.write_text(saved.model_dump_json(indent=1) + "\n")
            err.print(f"snapshot saved to {save} ({saved.scope})")
    chosen = None
    if policy is not None:
        try:
            named = get_policy(policy)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        if not isinstance(named, CorePolicy):
            raise ClientError(
                f"--policy: '{policy}' changes priorities as it runs; what-if replays core policies"
            )
        chosen = (policy, named.core)
    change = Change(
        quotas=dict(_quota(q) for q in set_quota or []),
        policy=chosen,
        drain=tuple(n for n in (drain or "").split(",") if n),
        add_nodes=dict(_count(a) for a in add_nodes or []),
    )
    try:
        changed = apply_change(saved.snapshot, change)
    except ChangeError as exc:
        raise ClientError(str(exc)) from None
    err.print(f"replaying {hours:g} h from the pool as taken ({saved.scope}), then with: "
              f"{'; '.join(change.words()) or 'no change'}")  # fmt: skip
    before = replay(saved.snapshot, saved.taken_at, hours)
    after = replay(changed, saved.taken_at, hours)
    rows = side_by_side(before, after)
    if plot_to is not None:
        from scheduler.sim.whatif import plot

        err.print(
            f"plot written to {plot(before, after, hours, '; '.join(change.words()) or 'no change', plot_to)}"
        )
    if output is Output.json:
        out: Any = {"scope": saved.scope, "taken_at": saved.taken_at, "hours": hours,
                    "change": change.words(), "steps": [before.steps, after.steps], "orgs": rows}  # fmt: skip
        emit(out, output)
        return
    emit(
        [{k: ("-" if v is None else v) for k, v in r.items()} for r in rows],
        output,
        ("org", "waiting", "started", "started_changed", "median_wait_h", "median_wait_h_changed",
         "preempted", "preempted_changed", "avg_share", "avg_share_changed"),
    )  # fmt: skip
