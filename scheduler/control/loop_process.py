"""The control loop in a child process, seen from the API's process: a ``LoopHandle``
over a doorbell (wakes: one non-blocking send, no answer) and a pipe (questions: one at
a time, each answered by a thread of the child while the loop cycles).

The child says ``ready`` or why it failed before anything else, so a server whose
backend cannot be built stops at start with the reason, as it did with one process.
A question not answered in time raises ``LoopUnavailable``; its late answer is dropped
by sequence number, so the next question never reads it.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import Metric

from scheduler.control.handle import LoopStatus, LoopUnavailable
from scheduler.control.wake import Doorbell

log = logging.getLogger(__name__)

READY = "ready"
ANSWER_TIMEOUT = 5.0


class LoopStartError(RuntimeError):
    """The loop's process could not start (its backend, its database): the reason."""


class LoopProcess:
    def __init__(self, process: BaseProcess, conn: Connection, doorbell: Doorbell) -> None:
        self.process = process
        self._conn = conn
        self._doorbell = doorbell
        self._lock = threading.Lock()
        self._seq = 0

    def wait_ready(self, timeout: float) -> None:
        if not self._conn.poll(timeout):
            raise LoopStartError(f"the control loop's process did not start within {timeout:g} s")
        try:
            word, reason = self._conn.recv()
        except EOFError:
            raise LoopStartError(
                f"the control loop's process exited at start (code {self.process.exitcode})"
            ) from None
        if word != READY:
            raise LoopStartError(reason)

    # --- the LoopHandle ---------------------------------------------------------------
    def wake(self) -> None:
        self._doorbell.ring()

    def status(self) -> LoopStatus:
        status: LoopStatus = self._ask("status")
        return status

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        lines: list[str] | None = self._ask("logs", key, tail, now, replica)
        return lines

    def metric_families(self) -> list[Metric]:
        families: list[Metric] = self._ask("metrics")
        return families

    # --- stopping ---------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: the child ends its cycle, hands the lease over, closes its backend."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            log.warning("the control loop's process did not stop in %g s; killing it", timeout)
            self.process.kill()
            self.process.join()
        self._conn.close()

    def _ask(self, name: str, *args: Any) -> Any:
        with self._lock:
            if not self.process.is_alive():
                raise LoopUnavailable(f"the control loop's process exited (code {self.process.exitcode})")
            self._seq += 1
            seq = self._seq
            try:
                self._conn.send((seq, name, args))
                while True:
                    if not self._conn.poll(ANSWER_TIMEOUT):
                        raise LoopUnavailable(f"the control loop did not answer in {ANSWER_TIMEOUT:g} s")
                    got, ok, value = self._conn.recv()
                    if got == seq:
                        break
            except (EOFError, OSError) as exc:
                raise LoopUnavailable(f"the control loop's process is gone ({type(exc).__name__})") from None
        if not ok:
            raise RuntimeError(f"the control loop could not answer '{name}': {value}")
        return value


# --- the child's side ------------------------------------------------------------------


def say_ready(conn: Connection) -> None:
    conn.send((READY, ""))


def say_failed(conn: Connection, reason: str) -> None:
    conn.send(("failed", reason))


Handlers = dict[str, Callable[..., Any]]


def answer(conn: Connection, handlers: Handlers, parent_gone: Callable[[], None]) -> None:
    """Answer the API's questions until the pipe closes, then ``parent_gone()``."""
    while True:
        try:
            seq, name, args = conn.recv()
        except (EOFError, OSError):
            parent_gone()
            return
        try:
            reply = (seq, True, handlers[name](*args))
        except Exception as exc:  # the question fails, never the loop
            reply = (seq, False, f"{type(exc).__name__}: {exc}")
        try:
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                conn.send((seq, False, f"the answer does not pickle: {exc}"))
        except OSError:
            parent_gone()
            return
