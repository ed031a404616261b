"""The trainpool CLI as a child that Ctrl-C reaches, as from a terminal.

A child inherits ignored signals: in full-suite runs a pytest-xdist worker passed on
SIGHUP, SIGINT and SIGQUIT ignored (seen in the stuck child's /proc status), so tests
that send Ctrl-C start the CLI with SIGINT handled and unblocked again.
"""

from __future__ import annotations

import sys

CODE = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "from scheduler.cli.main import app; app()"
)


def trainpool(*args: str) -> list[str]:
    """The command line for ``trainpool ARGS`` in such a child."""
    return [sys.executable, "-c", CODE, *args]
