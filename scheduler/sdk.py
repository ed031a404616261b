"""The training-side SDK: where to checkpoint, how to report one, where to resume from,
how to report progress, and how to leave cleanly when the pool stops the job.

Plain PyTorch::

    from scheduler import sdk

    start = 0
    if (path := sdk.resume_from()) is not None:
        state = torch.load(path)
        start = state["step"] + 1
    for step in range(start, steps):
        train_one_step()
        sdk.report_progress(step)             # every rank; cheap (no I/O most steps)
        if sdk.should_stop():                 # SIGTERM arrived: preemption or a move
            save_and_report(step)
            break
        if step % 10 == 0:
            save_and_report(step)

    def save_and_report(step):
        path = sdk.checkpoint_dir() / f"step-{step}.pt"
        if sdk.rank() == 0:
            torch.save({...}, path)
            sdk.report_checkpoint(step, path)

Inside Ray Train the pool's variables live in the driver's environment, not in the
workers': read ``sdk.Context.from_env()`` in the driver, pass it in ``train_loop_config``,
and call the same functions with ``ctx=``; the rank comes from Ray Train's context.

A report is a small manifest file, ``trainpool-checkpoint.json``, written atomically in
the checkpoint folder by rank 0. The backend reads it on the node that wrote it and the
server stores it, so no credentials are needed in the job. With ``TRAINPOOL_URL`` and
``TRAINPOOL_TOKEN`` set the report is also posted to the API (for backends that cannot
read the folder).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "trainpool-checkpoint.json"


@dataclass(frozen=True)
class Context:
    """What the pool told this job; picklable, so it can travel into Ray Train workers."""

    job_id: str | None = None
    attempt: int = 0
    checkpoint_dir: str = "checkpoints"
    resume_from: str | None = None
    url: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Context:
        e = os.environ if env is None else env
        return cls(
            job_id=e.get("TRAINPOOL_JOB_ID") or None,
            attempt=int(e.get("TRAINPOOL_ATTEMPT") or 0),
            checkpoint_dir=e.get("TRAINPOOL_CHECKPOINT_DIR") or "checkpoints",
            resume_from=e.get("TRAINPOOL_RESUME_FROM") or None,
            url=e.get("TRAINPOOL_URL") or None,
            token=e.get("TRAINPOOL_TOKEN") or None,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ctx(ctx: Context | None) -> Context:
    return ctx if ctx is not None else Context.from_env()


def rank() -> int:
    """This process's global rank: Ray Train's when inside it, else RANK, else 0.

    Ray Train is asked only where it is already imported (a Ray Train worker always has
    it): importing it costs a second, and leaves a plain torchrun or DDP process with
    Ray's exit hooks, so that a rank whose peer died lingers instead of exiting."""
    train = sys.modules.get("ray.train")
    if train is not None:  # Ray Train sets no RANK for user code in every version
        try:
            return int(train.get_context().get_world_rank())
        except Exception:
            pass
    return int(os.environ.get("RANK", "0") or 0)


def checkpoint_dir(ctx: Context | None = None) -> Path:
    """The folder this job writes checkpoints to (created); the same on every attempt."""
    path = Path(_ctx(ctx).checkpoint_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_manifest(folder: str | Path) -> tuple[int, str] | None:
    """The latest reported (step, path) in ``folder``, or None. Tolerates a missing or
    half-written file (it is replaced atomically, but a foreign writer might not)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
        return int(data["step"]), str(data["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_from(ctx: Context | None = None) -> str | None:
    """The checkpoint to resume from: the newer of what the pool passed in
    (TRAINPOOL_RESUME_FROM) and the folder's own manifest. The manifest can be newer
    when the job saved a checkpoint in its grace period after the server's last look."""
    c = _ctx(ctx)
    local = read_manifest(c.checkpoint_dir)
    candidates = [p for p in (c.resume_from, local[1] if local else None) if p and Path(p).exists()]
    if not candidates:
        return None
    if local is not None and local[1] in candidates:
        return local[1]
    return candidates[0]


def report_checkpoint(step: int, path: str | Path, ctx: Context | None = None) -> None:
    """Record that ``path`` holds the state after ``step``. Only rank 0 writes; other
    ranks' calls are no-ops, so every rank may call it."""
    if rank() != 0:
        return
    if step < 0:
        raise ValueError(f"step: must be >= 0, got {step}")
    c = _ctx(ctx)
    folder = checkpoint_dir(c)
    record = {"step": int(step), "path": str(Path(path).resolve()), "at": time.time()}
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, folder / MANIFEST)
    if c.url and c.token and c.job_id:
        _post(c, record)


def _post(c: Context, record: dict[str, Any]) -> None:
    import httpx

    try:
        httpx.post(
            f"{c.url.rstrip('/')}/v1/jobs/{c.job_id}/checkpoints",  # type: ignore[union-attr]
            json={"step": record["step"], "path": record["path"]},
            headers={"Authorization": f"Bearer {c.token}"},
            timeout=5.0,
        ).raise_for_status()
    except httpx.HTTPError as exc:  # the manifest is already written; the API is a second path
        log.warning("could not post the checkpoint to %s: %s", c.url, exc)


# --- progress ------------------------------------------------------------------------

PROGRESS_FOLDER = "trainpool-progress"
# A rank writes its progress file at most this often by default: the backend reads it
# every few seconds, and the pool's hang limit is minutes.
PROGRESS_EVERY = 5.0
_RECENT = 16  # step times the median is taken over


class _Progress:
    """One process's reporter: the step times it measured, and when it last wrote."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_call: float | None = None
        self.last_write = float("-inf")
        self.recent: list[float] = []


_progress = _Progress()


def progress_file(folder: str | Path, rank_: int) -> Path:
    return Path(folder) / PROGRESS_FOLDER / f"rank-{rank_}.json"


def report_progress(
    step: int, step_seconds: float | None = None, ctx: Context | None = None, every: float = PROGRESS_EVERY
) -> None:
    """Say that this rank finished ``step``. Call it from every rank, every step: it
    keeps the step time in memory and writes a small file beside the checkpoints at most
    every few seconds, so a step costs no I/O. ``step_seconds``: the rank's own compute
    time for the step, where the code measures it (time to the collective); by default,
    the wall time since the last call. In synchronous training every rank's wall time is
    the slowest rank's, so only the compute time tells the pool which rank is slow.
    ``every``: the seconds between writes; the pool's limits should be many of them."""
    if step < 0:
        raise ValueError(f"step: must be >= 0, got {step}")
    if step_seconds is not None and not step_seconds >= 0:
        raise ValueError(f"step_seconds: must be >= 0, got {step_seconds}")
    now = time.monotonic()
    p = _progress
    with p.lock:
        took = step_seconds if step_seconds is not None else (now - p.last_call if p.last_call else None)
        p.last_call = now
        if took is not None:
            p.recent = [*p.recent[-(_RECENT - 1) :], float(took)]
        if now - p.last_write < every:
            return
        p.last_write = now
        recent = sorted(p.recent)
    c = _ctx(ctx)
    me = rank()
    median = recent[len(recent) // 2] if recent else None
    record: dict[str, Any] = {"attempt": c.attempt, "rank": me, "step": int(step), "step_seconds": median,
                              "at": time.time()}  # fmt: skip
    if node := os.environ.get("TRAINPOOL_NODE"):  # the pool's: where this rank runs, whatever launched it
        record["node"] = node
    path = progress_file(c.checkpoint_dir, me)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError as exc:  # progress is advice to the pool; training goes on without it
        log.warning("could not write progress to %s: %s", path, exc)


def read_progress(folder: str | Path, attempt: int) -> list[dict[str, Any]]:
    """Every rank's latest progress record of ``attempt`` in ``folder``; skips others'
    and half-written files."""
    out = []
    for path in sorted((Path(folder) / PROGRESS_FOLDER).glob("rank-*.json")):
        try:
            data = json.loads(path.read_text())
            if int(data["attempt"]) != attempt:
                continue
            seconds = data.get("step_seconds")
            out.append({"rank": int(data["rank"]), "step": int(data["step"]),
                        "step_seconds": None if seconds is None else float(seconds),
                        "node": str(data["node"]) if data.get("node") else None})  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


# --- stopping with grace ---------------------------------------------------------------

_stop = threading.Event()
_installed = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop.set()


def install_sigterm_hook() -> None:
    """From now on SIGTERM (the pool's stop: preemption, a move, a cancel) sets a flag
    instead of killing the process; the job has its grace period to checkpoint."""
    global _installed
    if not _installed:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _installed = True


def should_stop(sync: bool = True) -> bool:
    """True once SIGTERM arrived. Installs the hook on first use. With ``sync`` and an
    initialised torch.distributed group, every rank gets the same answer in the same
    step (a MAX all-reduce), so all ranks save and leave together instead of some
    waiting forever in a collective for ranks that already left."""
    install_sigterm_hook()
    flag = _stop.is_set()
    if not sync:
        return flag
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        return flag
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
