"""Where the control loop runs (``trainpool server --loop``); see ``scheduler.control.root``."""

from __future__ import annotations

from enum import StrEnum


class LoopPlace(StrEnum):
    PROCESS = "process"  # a child process: its CPU does not take the API's GIL
    THREAD = "thread"  # a thread of the API's process: one process, for tests and debugging
