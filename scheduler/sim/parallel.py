"""Replay policies side by side in worker processes (``trainpool sim --jobs N``).

Each replay is single-threaded Python, so policies run in separate processes. Workers
are spawned (not forked: the parent may already run threads, e.g. the progress bar) and
get the prepared trace and pool once, at start. They post progress to a queue that the
parent drains into its progress bars while it waits.

Stopping: workers ignore SIGINT (from their spawn on), so Ctrl-C reaches only the
parent, which terminates them (SIGTERM to the parent does the same); on Linux each worker
also has the kernel send it SIGTERM when its parent dies, so a killed parent leaves none
behind. A worker's
exception is raised again in the parent (the same class and message where it survives
pickling), so the command reports it as it does without workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import queue
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.parent_death import die_with_parent
from scheduler.sim.record import SimResult

if TYPE_CHECKING:
    from scheduler.sim.run import ProgressFactory, _Replay

Outcome = tuple[dict[str, Any], SimResult]
Tick = Callable[[float, int, int], None]

# Set in each worker by ``_start_worker``.
_replay: _Replay | None = None
_progress: Any = None  # the multiprocessing queue of (policy, t, finished, total), or None

_HELD = (signal.SIGINT, signal.SIGTERM)  # while the workers get their data
_POLL_S = 0.2  # how often the parent looks at results while no progress arrives


def replay_in_workers(
    replay: _Replay, names: list[str], workers: int, progress: ProgressFactory | None
) -> dict[str, Outcome]:
    """Replay ``names`` (dearest first) on ``workers`` processes; outcomes by name."""
    ctx = mp.get_context("spawn")
    updates = ctx.Queue() if progress is not None else None
    ticks: dict[str, Tick] = {}  # a policy's bar appears when a worker starts its replay
    restore = _exit_on_sigterm()
    pool = None
    launcher = contextlib.ExitStack()
    try:
        spawn = launcher.enter_context(_launcher(ctx))
        args = (replay, updates, os.getpid())
        pool = spawn(lambda: ctx.Pool(workers, initializer=_start_worker, initargs=args))
        procs = list(pool._pool)  # the workers, to notice a death
        pending = {name: pool.apply_async(_replay_one, (name,)) for name in names}
        outcomes: dict[str, Outcome] = {}
        while pending:
            _drain(updates, ticks, outcomes.keys(), progress, wait=True)
            dead = [p for p in procs if p.exitcode is not None]
            if dead:  # its task never completes: multiprocessing.Pool would wait forever
                raise WorkerDied(_death(dead[0].exitcode, sorted(pending)))
            for name, res in list(pending.items()):
                if res.ready():
                    outcomes[name] = res.get()  # raises the worker's exception
                    del pending[name]
                    if progress is not None:  # the bar's last state, from the result itself
                        if name not in ticks:
                            ticks[name] = progress(name, len(replay.trace))
                        ticks[name](*outcomes[name][1].progress_at_end())
        pool.close()
        pool.join()
        return outcomes
    finally:
        if pool is not None:
            pool.terminate()  # on an error or Ctrl-C: stop the others at once (no-op after join)
            pool.join()
        if updates is not None:
            updates.close()
            updates.cancel_join_thread()
        launcher.close()
        restore()


@contextlib.contextmanager
def _launcher(ctx: Any) -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Workers start with SIGINT ignored and (where ``setpriv`` exists) with their parent-
    death signal set, both from their exec on: set only in their initializer, they left
    the seconds of the workers' imports (while they unpickle the trace) open to Ctrl-C's
    tracebacks and to a killed parent leaving them behind. Both survive exec, so the spawn
    goes through a two-line launcher that sets them and execs the interpreter; it stays on
    disk while the workers run (the shell reads it after its exec). Yields
    ``spawn(make_pool)``: a Ctrl-C or SIGTERM to the parent while it spawns is held until
    the workers have their data (cut short, their unpickling fails loudly), then
    delivered."""
    with tempfile.TemporaryDirectory(prefix="trainpool-sim-") as tmp:
        launcher = Path(tmp) / "python"
        setpriv = shutil.which("setpriv")
        die = f"{shlex.quote(setpriv)} --pdeathsig TERM " if setpriv else ""
        launcher.write_text(f"#!/bin/sh\ntrap '' INT\nexec {die}{shlex.quote(sys.executable)} \"$@\"\n")
        launcher.chmod(0o700)

        def spawn(make: Callable[[], Any]) -> Any:
            held: list[int] = []
            main = threading.current_thread() is threading.main_thread()
            previous = {s: signal.signal(s, lambda n, _: held.append(n)) for s in _HELD} if main else {}
            ctx.set_executable(str(launcher))
            try:
                made = make()
            finally:
                ctx.set_executable(sys.executable)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            if held:
                made.terminate()
                made.join()
                signal.raise_signal(held[0])  # to the handler it would have reached
            return made

        yield spawn


class WorkerDied(RuntimeError):
    """A worker process ended while replays were pending (killed: the OOM killer, a signal)."""


def _death(code: int | None, pending: list[str]) -> str:
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with {code}"
    return f"a simulator worker {how}; the replays of {', '.join(pending)} did not finish"


def _exit_on_sigterm() -> Callable[[], None]:
    """SIGTERM (``kill``, ``timeout``) ends the command through the ``finally`` above, as
    Ctrl-C does, so the workers are stopped and the queue released; by default it would end
    the parent at once (the workers then die with it, and the resource tracker complains
    of leaked semaphores). Only from the main thread, and only over the default action.
    Returns what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return lambda: None

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _drain(
    updates: Any,
    ticks: dict[str, Tick],
    finished: Collection[str],
    progress: ProgressFactory | None,
    wait: bool,
) -> None:
    """Apply the workers' progress posts; with ``wait``, block a moment for the first."""
    if updates is None:
        if wait:
            time.sleep(_POLL_S)
        return
    timeout: float | None = _POLL_S if wait else None
    while True:
        try:
            name, t, done, total = updates.get(timeout=timeout) if timeout else updates.get_nowait()
        except queue.Empty:
            return
        timeout = None  # take what is already there, then go back to the results
        if name in finished or progress is None:
            continue  # posts can arrive after the result: its bar already shows the end
        if name not in ticks:
            ticks[name] = progress(name, total)
        ticks[name](t, done, total)


def _start_worker(replay: _Replay, updates: Any, parent: int) -> None:
    global _replay, _progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C (ignored since the exec)
    die_with_parent(parent)
    _replay, _progress = replay, updates


def _replay_one(name: str) -> Outcome:
    assert _replay is not None, "worker not started"
    tick = None
    if _progress is not None:
        updates = _progress

        def tick(t: float, done: int, total: int) -> None:
            updates.put((name, t, done, total))

        tick(0.0, 0, len(_replay.trace))  # started: the parent shows its bar now

    try:
        return _replay.run(name, tick=tick)
    except Exception as exc:
        raise _portable(exc) from None


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling unchanged, else an exception of a built-in class
    with its message (ValueError for the user errors the command reports)."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # anything that does not pickle, or not back, is replaced
        pass
    from values.errors import ConfigError

    if isinstance(exc, ValueError | ConfigError):
        return ValueError(str(exc))
    return RuntimeError(f"{type(exc).__name__}: {exc}")
