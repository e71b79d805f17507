"""Named points of a write at which a test can freeze the process, to kill it exactly there.

A test hook, not a setting: when the environment variable ``RAG_PAUSE_AT`` names a point
(``NAME``, or ``NAME#N`` for its N-th arrival in this process), the process writes a marker file
at the path in ``RAG_PAUSE_FILE`` (if set) and then sleeps until it is killed. The crash tests
(``tests/ingest/test_crash.py``) use it to send SIGKILL at every step of ``rag ingest``, from
discovery to the removal of old snapshots, without depending on the machine's speed.

The variable is read at each call, so a test can set it in a child process's environment only.
Without it, :func:`reach` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAUSE_AT = "RAG_PAUSE_AT"
PAUSE_FILE = "RAG_PAUSE_FILE"

# Every point a write passes, in the order of a run. Tests iterate over it; `reach` refuses others
# so that a renamed point cannot silently stop being tested.
POINTS = (
    "ingest-discovered",  # files found, nothing locked or loaded yet
    "lock-taken",  # writer lock held, before old snapshots and leftovers are cleaned up
    "lock-cleaned",  # clean-up at lock time done
    "writer-opened",  # the writer has read the committed snapshot; nothing written yet
    "ingest-file-loaded",  # a file loaded and chunked (loader thread)
    "ingest-file-embedded",  # a batch of files embedded
    "ingest-file-stored",  # a file's chunks and vectors added to the new segment
    "ingest-before-commit",  # all files stored, nothing published
    "merge-rows-copied",  # a merge copied the live rows of its segments into a new segment
    "commit-sqlite-committed",  # the new segment's rows committed (in .tmp-seg-*)
    "commit-vectors-written",  # its vector file written
    "commit-lexical-written",  # its tantivy postings written
    "commit-segment-synced",  # every file of the segment fsynced
    "commit-segment-renamed",  # renamed to segments/seg-N, nothing names it yet
    "commit-manifest-written",  # manifest.json of the new snapshot written
    "commit-files-synced",  # the manifest fsynced
    "commit-snapshot-synced",  # the working copy's directory fsynced, before its rename
    "commit-snapshot-renamed",  # renamed to snap-N, before the index directory is fsynced
    "commit-snapshot-rename-synced",  # index directory fsynced, CURRENT not yet touched
    "pointer-temp-created",  # an empty .CURRENT.tmp exists
    "pointer-temp-written",  # .CURRENT.tmp holds the new name, not yet fsynced
    "pointer-temp-synced",  # .CURRENT.tmp fsynced, just before it replaces CURRENT
    "pointer-renamed",  # CURRENT replaced, before the index directory is fsynced
    "pointer-synced",  # the new CURRENT is durable; the commit is done
    "cleanup-renamed-aside",  # an old snapshot renamed to .del-snap-N, nothing deleted yet
    "cleanup-deleting",  # one more file of an old snapshot deleted
    "cleanup-done",  # old snapshots and leftovers removed
    "cleanup-segment-aside",  # a segment no snapshot lists renamed to .del-seg-N, not deleted
)

# Points on the workers of an ingest on Ray (``rag ingest --ray``), where the Ray tests kill a
# worker process: the task of a killed worker runs again in another process, which must not pause
# in turn, so a point pauses only while the marker file does not exist yet.
CLUSTER_POINTS = (
    "ray-file-parsed",  # a parse task has a file's rows, before it returns them
    "ray-batch-embedded",  # an embedding actor has a batch's vectors, before it returns them
)

_lock = threading.Lock()
_arrivals: dict[str, int] = {}


def reach(name: str) -> None:
    """Mark that the process has reached point ``name``; pause here if a test asked to."""
    if name not in POINTS and name not in CLUSTER_POINTS:
        raise ValueError(f"unknown crash point {name!r}; add it to rag.index.crashpoints.POINTS")
    wanted = os.environ.get(PAUSE_AT)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    with _lock:
        _arrivals[name] = _arrivals.get(name, 0) + 1
        arrival = _arrivals[name]
    if arrival != (int(nth) if nth else 1):
        return
    marker = os.environ.get(PAUSE_FILE)
    if marker and Path(marker).exists():
        return  # another process paused here already (see CLUSTER_POINTS)
    if marker:
        # Written aside and renamed, so the test never reads a half-written marker.
        tmp = Path(f"{marker}.{os.getpid()}.tmp")
        tmp.write_text(f"{wanted} {os.getpid()}\n", encoding="utf-8")
        os.replace(tmp, marker)
    # Until killed. Other threads run on, but a write publishes only from the main thread, after
    # the loader thread has finished, so a pause in either leaves the files on disk as they are.
    while True:
        time.sleep(3600)
