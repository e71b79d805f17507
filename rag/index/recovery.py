"""Repair of an index whose CURRENT is missing or damaged: ``rag index recover``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rag.errors import IndexCorrupt, IndexNotFound
from rag.index.snapshots import CURRENT, current_name, lock, point_current, snapshot_names
from rag.index.verify import verify_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did."""

    snapshot: str  # the snapshot CURRENT names now
    previous: str | None  # what CURRENT held before (None: there was no CURRENT file)
    changed: bool
    rejected: dict[str, list[str]]  # newer snapshots that failed verification, with the problems
    snapshots: list[str]  # every snapshot on disk, oldest first


def recover(index_dir: str | Path) -> Recovery:
    """Point CURRENT at the newest snapshot that opens and verifies; deletes nothing.

    When CURRENT already names a sound snapshot nothing changes. A snapshot newer than the last
    committed one can only be the complete, fsynced result of a write that was interrupted just
    before it replaced CURRENT. Raises IndexNotFound when there is no snapshot at all and
    IndexCorrupt when none verifies.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise IndexNotFound(
            f"No index at {index_dir}. Build one with: rag ingest PATH --index {index_dir}"
        )
    with lock(index_dir):
        before = current_name(index_dir)
        names = snapshot_names(index_dir)
        if before in names and not verify_snapshot(index_dir / before):
            return Recovery(before, before, False, {}, names)
        rejected: dict[str, list[str]] = {}
        for name in reversed(names):
            problems = verify_snapshot(index_dir / name)
            if not problems:
                point_current(index_dir, name)
                log.info("%s now names %s (was %r)", index_dir / CURRENT, name, before)
                return Recovery(name, before, True, rejected, names)
            rejected[name] = problems
    if not names:
        raise IndexNotFound(
            f"{index_dir} holds no snapshot to recover. Build the index with: rag ingest PATH "
            f"--index {index_dir}"
        )
    details = "; ".join(f"{n}: {p[0]}" for n, p in rejected.items())
    raise IndexCorrupt(
        f"No snapshot in {index_dir} verifies ({details}). Rebuild the index into a new "
        "directory with: rag ingest PATH --index NEW_DIR"
    )
