"""A child process that must not outlive the process that started it."""

from __future__ import annotations

import contextlib
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Linux: ask the kernel for ``signum`` when the parent dies, even by SIGKILL.

    The kernel sends it when the parent's *thread* that started this process exits: start
    such children from a thread that lives as long as the process (the main thread)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
