"""``trainpool demo``: a scripted scenario on the embedded pool, narrated, with checks.

The pool (embedded-pool.yaml): six nodes of two simulated accelerators; research is
guaranteed 8, product 2 (may borrow 6 more), speech 2.

1. product fills idle capacity: four steady workers, three of them on borrowed quota.
2. research submits a 4-replica PyTorch DDP gang (gloo). It is below its guarantee, so
   the pool reclaims borrowed capacity from product with a graceful preemption: the
   worker's SIGTERM hook saves a checkpoint and it leaves.
3. Mid-training, one node hosting the gang is killed (SIGKILL to its raylet). The gang is
   restarted on other nodes, reclaiming again, and resumes from its last checkpoint:
   the step counter continues.
4. speech submits a job; it waits while capacity is lost, and starts when the node is
   repaired and rejoins.
5. The gang finishes; product's preempted workers run again from their checkpoints.
Every check is printed; the demo exits 0 only if all held.

Everything goes through the HTTP API with per-org member tokens, as users would.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from scheduler.cli.client import Client, Connection
from scheduler.embedded.runtime import EmbeddedOptions, EmbeddedPool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "train"
FLAVOR = "sim-gpu"
DDP_STEPS = 60
KILL_AFTER_STEP = 14  # a checkpoint exists (every 5 steps) and training is under way
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}


class DemoFailed(Exception):
    """A step could not go on (timeout, unexpected state); the message says which."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Demo:
    pool: EmbeddedPool
    console: Console
    checks: list[Check] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    tokens: dict[str, Client] = field(default_factory=dict)

    # --- narration and checks ----------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/dim]  {text}", highlight=False)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.say(f"{mark} {name}" + (f" [dim]({detail})[/dim]" if detail else ""))
        return ok

    def wait(self, what: str, until: Callable[[], Any], timeout: float) -> Any:
        """Poll ``until`` (every 0.5 s) until it returns something truthy; a spinner shows."""
        deadline = time.monotonic() + timeout
        with self.console.status(f"waiting: {what}", spinner="dots"):
            while time.monotonic() < deadline:
                value = until()
                if value:
                    return value
                time.sleep(0.5)
        raise DemoFailed(f"timed out after {timeout:.0f}s waiting: {what}")

    # --- the API, as each org --------------------------------------------------------
    def api(self, org: str | None = None) -> Client:
        key = org or "admin"
        if key not in self.tokens:
            admin = Client(Connection(self.pool.url, self.pool.token))
            if org is None:
                self.tokens[key] = admin
            else:
                made = admin.post("/v1/tokens", {"role": "member", "org": org, "name": "demo"})
                self.tokens[key] = Client(Connection(self.pool.url, made["secret"]))
        return self.tokens[key]

    def submit(self, org: str, name: str, replicas: int, command: list[str], grace: float = 20.0) -> str:
        spec = {
            "name": name,
            "org": org,
            "gang": {"flavor": FLAVOR, "replicas": replicas, "accelerators": 2},
            "command": command,
            "grace_period_seconds": grace,
            "restart": {"max_restarts": 2, "backoff_seconds": 1},
        }
        job: dict[str, Any] = self.api(org).post("/v1/jobs", {"spec": spec})
        return str(job["id"])

    def job(self, job_id: str, org: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api(org).get(f"/v1/jobs/{job_id}")
        return body

    def state(self, job_id: str, org: str) -> str:
        return str(self.job(job_id, org)["state"])

    def logs(self, job_id: str, org: str, attempt: int | None = None, replica: int | None = 0) -> list[str]:
        try:
            body = self.api(org).get(f"/v1/jobs/{job_id}/logs", attempt=attempt, replica=replica, tail=2000)
        except Exception:
            return []
        return list(body["lines"])

    def events(self, job_id: str, org: str) -> list[dict[str, Any]]:
        return list(self.api(org).get(f"/v1/jobs/{job_id}/events"))

    def nodes_of(self, job_id: str, org: str) -> list[str]:
        alloc = self.job(job_id, org).get("allocation") or {}
        return [n["node"] for n in alloc.get("nodes", [])]

    # --- the scenario ------------------------------------------------------------------
    def run(self) -> bool:
        py = sys.executable
        worker = [py, str(EXAMPLES / "steady_worker.py"), "--steps", "0", "--step-seconds", "0.5"]
        ddp = [
            py, str(EXAMPLES / "ddp_train.py"), "--steps", str(DDP_STEPS), "--checkpoint-every", "5",
            "--step-seconds", "0.4",
        ]  # fmt: skip

        self.say("[bold]1. product fills idle capacity[/bold]: 4 workers of 2 accelerators (guarantee: 2)")
        workers = [self.submit("product", f"worker-{i}", 1, worker) for i in range(4)]
        self.wait("product's workers running", lambda: self._all(workers, "product", {"RUNNING"}), 90)
        held = sum(2 * len(self.nodes_of(w, "product")) for w in workers)
        nominal = self.api("product").get("/v1/orgs/product/quotas")[FLAVOR]["nominal"]
        self.check(
            "product borrows idle capacity beyond its guarantee",
            held > nominal,
            f"{held} accelerators held on a guarantee of {nominal}",
        )

        self.say(
            "[bold]2. research submits a 4-replica DDP gang[/bold] (PyTorch, gloo, checkpoint every 5 steps)"
        )
        gang = self.submit("research", "ddp-train", 4, ddp, grace=30)
        self.wait("the gang running", lambda: self.state(gang, "research") == "RUNNING", 120)
        preempted = [w for w in workers if self._preempted(w)]
        self.check(
            "research's guarantee is restored by reclaiming borrowed capacity",
            len(preempted) >= 1,
            f"preempted {len(preempted)} of product's workers",
        )
        if preempted:
            victim = preempted[0]
            lines = self.wait(
                "the preempted worker's checkpoint",
                lambda: self._saved_on_sigterm(victim),
                30,
            )
            self.check("the preemption was graceful: SIGTERM hook saved a checkpoint", bool(lines), lines)
        nodes = self.nodes_of(gang, "research")
        self.check("the gang's 4 replicas run on 4 nodes", len(set(nodes)) == 4, ", ".join(nodes))

        self.say(f"[bold]3. kill a node mid-training[/bold] (after step {KILL_AFTER_STEP})")
        self.wait(f"training past step {KILL_AFTER_STEP}", lambda: self._step(gang) >= KILL_AFTER_STEP, 120)
        victim_node = nodes[1]  # rank 1's node
        assert self.pool.cluster is not None
        self.pool.cluster.kill_node(victim_node)
        killed_at = time.monotonic()
        self.say(f"SIGKILL to the raylet of {victim_node} (hosts rank 1)")
        self.wait("the gang restarted", lambda: self.job(gang, "research")["attempt"] >= 1, 60)
        detected = time.monotonic() - killed_at
        self.wait("the gang running again", lambda: self.state(gang, "research") == "RUNNING", 120)
        back = time.monotonic() - killed_at
        row = self.job(gang, "research")
        self.check(
            "the node's loss is an infrastructure failure: restart not charged",
            row["restarts"] == 0,
            f"detected and requeued in {detected:.1f}s; running again {back:.1f}s after the kill",
        )
        new_nodes = self.nodes_of(gang, "research")
        self.check("the gang restarted on other nodes", victim_node not in new_nodes, ", ".join(new_nodes))

        self.say("[bold]4. speech submits a job[/bold] while a node is down (its guarantee: 2)")
        speech = self.submit("speech", "speech-job", 1, [*worker[:3], "20", *worker[4:]])
        time.sleep(3)
        waiting = self.job(speech, "speech")
        self.check(
            "with a node down, speech waits with a reason",
            waiting["state"] == "PENDING",
            f"{waiting['reason']}: {waiting['message']}",
        )
        self.say(f"repairing {victim_node}: a fresh Ray node rejoins under the same name")
        self.pool.cluster.restart_node(victim_node)
        placed = self.wait("speech's job placed", lambda: self.nodes_of(speech, "speech"), 90)
        self.check(
            "the repaired node is used again: speech runs on it",
            victim_node in placed,
            f"speech placed on {', '.join(placed)}",
        )

        self.say("[bold]5. training finishes[/bold]")
        final = self.wait("the gang to finish", lambda: self._ended(gang, "research"), 240)
        self.check("the DDP gang succeeded", final == "SUCCEEDED", final)
        resumed = self._resumed_step(gang)
        ckpt = self._checkpoint_before_kill(gang)
        self.check(
            "the step counter continued from the checkpoint, not from 0",
            resumed is not None and resumed > 0 and ckpt is not None and resumed == ckpt + 1,
            f"last checkpoint before the kill: step {ckpt}; attempt 1 started at step {resumed}",
        )
        if preempted:
            self.wait(
                "a preempted worker resuming",
                lambda: any(self._resumed_worker(w) for w in preempted),
                90,
            )
            self.check("the preempted worker resumed from its own checkpoint", True)
        for w in workers:
            if self.state(w, "product") not in TERMINAL:
                self.api("product").post(f"/v1/jobs/{w}/cancel")
        self.wait("workers cancelled", lambda: all(self._ended(w, "product") for w in workers), 60)
        self._usage_table(gang)
        return all(c.ok for c in self.checks)

    # --- what the checks read --------------------------------------------------------
    def _all(self, ids: list[str], org: str, states: set[str]) -> bool:
        return all(self.state(j, org) in states for j in ids)

    def _ended(self, job_id: str, org: str) -> str | None:
        state = self.state(job_id, org)
        return state if state in TERMINAL else None

    def _preempted(self, job_id: str) -> bool:
        return any(e["event"] == "preempt" for e in self.events(job_id, "product"))

    def _saved_on_sigterm(self, job_id: str) -> str:
        lines = self.logs(job_id, "product", attempt=0)
        saved = [ln for ln in lines if "stopping on SIGTERM" in ln]
        ckpts = [ln for ln in lines if "checkpoint step" in ln]
        return f"{ckpts[-1].split(' ', 1)[-1]}" if saved and ckpts else ""

    def _step(self, job_id: str) -> int:
        steps = [
            int(m.group(1))
            for ln in self.logs(job_id, "research")
            if (m := re.search(r"step (\d+) loss", ln))
        ]
        return max(steps, default=-1)

    def _resumed_step(self, job_id: str) -> int | None:
        for ln in self.logs(job_id, "research", attempt=1):
            if m := re.search(r"resumed from step (\d+)", ln):
                return int(m.group(1)) + 1
            if "starting at step 0" in ln:
                return 0
        return None

    def _checkpoint_before_kill(self, job_id: str) -> int | None:
        steps = [
            int(m.group(1))
            for ln in self.logs(job_id, "research", attempt=0)
            if (m := re.search(r"checkpoint step (\d+)", ln))
        ]
        return max(steps, default=None)

    def _resumed_worker(self, job_id: str) -> bool:
        row = self.job(job_id, "product")
        if row["attempt"] < 1:
            return False
        return any("resumed from step" in ln for ln in self.logs(job_id, "product"))

    def _usage_table(self, gang: str) -> None:
        """Usage and effective training time by org, and where the DDP gang's time went."""
        rows = self.api().get("/v1/usage", by="org")
        table = Table(title="accelerator usage by org (this demo)")
        table.add_column("org")
        table.add_column("accelerator-seconds", justify="right")
        table.add_column("effective training time", justify="right")
        for r in rows:
            ratio = r.get("effective_time_ratio")
            table.add_row(str(r["org"]), f"{float(r['accelerator_hours']) * 3600:.0f}",
                          "-" if ratio is None else f"{100 * float(ratio):.0f}%")  # fmt: skip
        self.console.print(table)
        spent = self.job(gang, "research").get("goodput") or {}
        lost = {k: v * 3600 for k, v in (spent.get("lost_accelerator_hours") or {}).items() if v}
        if spent.get("effective_time_ratio") is not None:
            where = ", ".join(f"{k} {v:.0f}" for k, v in sorted(lost.items(), key=lambda kv: -kv[1]))
            self.say(f"the DDP gang kept {100 * spent['effective_time_ratio']:.0f}% of its accelerator time; "
                     f"lost (accelerator-seconds): {where or 'nothing'}")  # fmt: skip


def run_demo(opts: EmbeddedOptions, console: Console) -> bool:
    if not (EXAMPLES / "ddp_train.py").exists():
        raise DemoFailed(
            f"the demo's training scripts are not at {EXAMPLES} (run it from a trainpool checkout)"
        )
    started = time.monotonic()
    with EmbeddedPool(opts, say=lambda line: console.print(f"[dim]{line}[/dim]", highlight=False)) as pool:
        console.print(f"pool up in {time.monotonic() - started:.0f}s at {pool.url}", highlight=False)
        demo = Demo(pool, console)
        try:
            ok = demo.run()
        except DemoFailed as exc:
            demo.check("the scenario ran to its end", False, str(exc))
            ok = False
    passed = sum(c.ok for c in demo.checks)
    colour = "green" if ok else "red"
    console.print(
        f"[{colour}]{passed}/{len(demo.checks)} checks held[/{colour}] in {time.monotonic() - started:.0f}s",
        highlight=False,
    )
    return ok
