"""Each job's checkpoint folder, ``<root>/<job id>``, and the one rule for a reported
checkpoint path: it lies inside the reporting job's own folder.

A reported path becomes the next attempt's ``TRAINPOOL_RESUME_FROM``: without the rule a
member could point its job at another org's checkpoint and have the pool hand it over.
The rule is lexical (``..`` cannot climb out) and, where this process can see the
folder, also on the real path (a symlink planted in the folder cannot lead out of it).
It is applied to reports through the API, to manifests a backend read, and again to
stored paths before a launch.
"""

from __future__ import annotations

import os
import posixpath

# Where nothing else is said (tests, an in-process loop); a server passes its own
# (--checkpoint-root, by default beside the database).
DEFAULT_ROOT = "checkpoints"


def job_folder(root: str, job_id: str) -> str:
    """Absolute: a relative root is taken from the server's working directory."""
    return posixpath.join(os.path.abspath(root), job_id)


def outside_problem(path: str, root: str, job_id: str) -> str | None:
    """Why ``path`` is not a checkpoint of job ``job_id``, or None if it is."""
    folder = job_folder(root, job_id)
    if not posixpath.isabs(path):
        return f"must be an absolute path inside the job's checkpoint folder {folder}"
    real = os.path.realpath(folder)
    # The SDK reports resolved paths: a root reached through a link is reported as its target.
    if not (_within(posixpath.normpath(path), folder) or _within(posixpath.normpath(path), real)):
        return f"must be inside the job's checkpoint folder {folder}"
    if os.path.isdir(folder) and not _within(os.path.realpath(path), real):
        return f"leads out of the job's checkpoint folder {folder} (through a link)"
    return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
