"""What a gang's code reported through the SDK into its checkpoint folder (the newest
checkpoint manifest, each rank's progress), turned into what a ``GangStatus`` carries.
The Ray backend's rank-0 actor reads the folder on its node; the Kubernetes backend reads
it on the server, which mounts the same volume."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler import sdk
from values.progress import RankReport

READ_EVERY = 5.0  # seconds between reads of one gang's folder: ranks write every 5 s at most


def rank_reports(records: list[dict[str, Any]], nodes: Sequence[str | None]) -> tuple[RankReport, ...]:
    """Progress records (``sdk.read_progress``), each with the node its rank runs on: the
    one the rank wrote (the pool's ``TRAINPOOL_NODE``), else its replica's by rank. A
    launcher that runs several ranks per replica (torchrun) numbers ranks past the
    replicas: only the written node is right for those. A written node that is not one of
    the gang's is not believed: the job's own files must not blame another node."""
    ours = set(nodes)
    out = []
    for r in records:
        rank = int(r["rank"])
        written = r.get("node")
        node = written if written in ours else (nodes[rank] if 0 <= rank < len(nodes) else None)
        out.append(RankReport(rank, int(r["step"]), r["step_seconds"], node))
    return tuple(out)


Checkpoint = tuple[int, str]  # (step, path), as the manifest says


def newer_checkpoint(kept: Checkpoint | None, seen: Checkpoint | None) -> Checkpoint | None:
    """The later of the checkpoint already known and the one just read (by step)."""
    if seen is not None and (kept is None or seen[0] >= kept[0]):
        return (int(seen[0]), str(seen[1]))
    return kept


@dataclass
class FolderReader:
    """One gang's folder, read at most every ``READ_EVERY`` seconds (monotonic clock);
    the last reading is kept between reads. A folder this process cannot see reads as
    nothing reported."""

    folder: str
    attempt: int
    checkpoint: Checkpoint | None = None
    progress: tuple[RankReport, ...] = ()
    _read_at: float = field(default=float("-inf"), repr=False)

    def read(self, nodes: Sequence[str | None], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._read_at < READ_EVERY:
            return
        self._read_at = now
        if not Path(self.folder).is_dir():
            return
        self.checkpoint = newer_checkpoint(self.checkpoint, sdk.read_manifest(self.folder))
        self.progress = rank_reports(sdk.read_progress(self.folder, self.attempt), nodes)
