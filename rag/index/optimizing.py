"""``rag index optimize``: every segment of an index merged into one."""

from __future__ import annotations

import logging
from pathlib import Path

from rag.index.commits import clean_up_after
from rag.index.manifest import Manifest, read_manifest
from rag.index.merging import merge, optimize_plan
from rag.index.snapshots import current_snapshot, lock
from rag.index.writer import clean_at_lock, committed_base, open_writer_locked

log = logging.getLogger(__name__)


def optimize(index_dir: str | Path) -> tuple[Manifest, Manifest] | None:
    """Merge every segment of ``index_dir`` into one, without tombstoned rows and with an
    approximate vector index when its size calls for one; (before, after), or None when the
    index is already one such segment. A clean-up failure after the merge is published is logged
    as a warning, as a commit's is."""
    index_dir = Path(index_dir)
    current_snapshot(index_dir)  # no index (or none committed): IndexNotFound, saying what to do
    with lock(index_dir):
        committed = committed_base(index_dir)
        if committed is None:  # CURRENT removed meanwhile
            current_snapshot(index_dir)
            raise AssertionError("unreachable")
        base, before = committed
        if not before.segmented:
            # An index of schema 1-2 becomes one segment on its first write.
            with open_writer_locked(index_dir, base, before) as writer:
                snap = writer.commit(merge=False)
            return before, read_manifest(snap)
        clean_at_lock(index_dir, base)
        names = optimize_plan(before)
        if not names:
            return None
        snap = merge(index_dir, base, names)
        failed = clean_up_after(index_dir, snap, {snap.name, base.name})
        if failed is not None:
            log.warning("%s", failed)
        return before, read_manifest(snap)
