"""The snapshots of an index directory: CURRENT, ``snap-N`` directories, the writer lock.

Rules that keep a crash (SIGKILL, power loss) from costing a committed snapshot:

* A snapshot is complete and fsynced, files and directory, before it gets a ``snap-N`` name; the
  index directory is fsynced after each rename, so CURRENT never names a snapshot that a power
  loss could take back.
* CURRENT is replaced by renaming a fsynced temporary file over it, never written in place.
* Clean-up deletes snapshots only while CURRENT names an existing one (the caller also checks that
  its manifest reads) and never that one; with CURRENT missing or damaged every snapshot stays.
* A snapshot to delete is first renamed out of the ``snap-*`` namespace (``.del-snap-N``), so a
  kill half-way through deleting it never leaves a half-empty directory that looks like a
  snapshot. Leftovers of interrupted writes (``.tmp-snap-*``, ``.del-*``) are removed by the next
  writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from rag.errors import IndexCorrupt, IndexLocked, IndexNotFound
from rag.index.crashpoints import reach

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
LOCK = ".lock"
TMP_PREFIX = ".tmp-snap-"
_DEL_PREFIX = ".del-"
_POINTER_TMP = f".{CURRENT}.tmp"
_SNAP_RE = re.compile(r"^snap-(\d{6,})$")


def snapshot_names(index_dir: Path) -> list[str]:
    """The ``snap-N`` directories in ``index_dir``, oldest first."""
    if not index_dir.is_dir():
        return []
    found = [p for p in index_dir.iterdir() if _SNAP_RE.match(p.name) and p.is_dir()]
    return [p.name for p in sorted(found, key=lambda p: int(p.name.split("-")[1]))]


def current_name(index_dir: Path) -> str | None:
    """What CURRENT holds, stripped; None when there is no CURRENT file."""
    try:
        raw = (index_dir / CURRENT).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        return ""
    return raw.decode("utf-8", errors="replace").strip()


def recovery_hint(index_dir: Path) -> str:
    """What a damaged index still holds and the command that repairs it."""
    names = snapshot_names(index_dir)
    if not names:
        return (
            f"No snapshot is on disk; rebuild the index with: rag ingest PATH --index {index_dir}"
        )
    return (
        f"Snapshots on disk: {', '.join(names)} (none was removed). Point CURRENT at the newest "
        f"one that verifies with: rag index recover --index {index_dir} (or rebuild with: "
        "rag ingest PATH --index NEW_DIR)"
    )


def current_snapshot(index_dir: Path) -> Path:
    """The committed snapshot directory of ``index_dir``.

    Raises :class:`IndexNotFound` when nothing was ever committed, :class:`IndexCorrupt` (naming
    the snapshots on disk and the recovery command) when CURRENT names no snapshot.
    """
    index_dir = Path(index_dir)
    name = current_name(index_dir)
    if name is None:
        if not index_dir.exists():
            raise IndexNotFound(
                f"No index at {index_dir}. Build one with: rag ingest PATH --index {index_dir}"
            )
        orphans = snapshot_names(index_dir)
        if orphans:
            # A first write killed between publishing its snapshot and CURRENT, or a deleted
            # CURRENT: either way nothing is committed, and nothing is deleted.
            raise IndexNotFound(
                f"{index_dir} holds no committed index (no {CURRENT} file), only the "
                f"unpublished snapshot(s) {', '.join(orphans)}. Build it with: rag ingest PATH "
                f"--index {index_dir}; if {CURRENT} was deleted by hand, restore the newest "
                f"snapshot that verifies with: rag index recover --index {index_dir}"
            )
        raise IndexNotFound(
            f"{index_dir} holds no index yet. Build one with: rag ingest PATH --index {index_dir}"
        )
    snap = index_dir / name
    if not _SNAP_RE.match(name) or not snap.is_dir():
        raise IndexCorrupt(
            f"{index_dir / CURRENT} names {name!r}, which is not a snapshot in {index_dir}. "
            + recovery_hint(index_dir)
        )
    return snap


@contextlib.contextmanager
def lock(index_dir: Path) -> Iterator[None]:
    """Hold the one writer lock of ``index_dir``; IndexLocked if another process holds it."""
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise IndexLocked(
                f"{index_dir} is being written by {holder}. Wait for it to finish, then run "
                "this command again."
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def publish(index_dir: Path, work: Path) -> Path:
    """Make the finished working copy ``work`` the committed snapshot; returns its new path.

    The caller has written and fsynced the files in ``work`` and holds the lock.
    """
    fsync_dir(work)
    reach("commit-snapshot-synced")
    numbers = [int(n.split("-")[1]) for n in snapshot_names(index_dir)]
    snap = index_dir / f"snap-{max(numbers, default=0) + 1:06d}"
    os.replace(work, snap)
    reach("commit-snapshot-renamed")
    fsync_dir(index_dir)
    reach("commit-snapshot-rename-synced")
    point_current(index_dir, snap.name)
    return snap


def point_current(index_dir: Path, name: str) -> None:
    """Atomically and durably make CURRENT name the snapshot ``name``."""
    tmp = index_dir / _POINTER_TMP
    with open(tmp, "w", encoding="utf-8") as f:
        reach("pointer-temp-created")
        f.write(name + "\n")
        f.flush()
        reach("pointer-temp-written")
        os.fsync(f.fileno())
    reach("pointer-temp-synced")
    os.replace(tmp, index_dir / CURRENT)
    reach("pointer-renamed")
    fsync_dir(index_dir)
    reach("pointer-synced")


def remove_stale(index_dir: Path, keep: Collection[str] | None) -> None:
    """Remove leftovers of interrupted writes and every snapshot not in ``keep``.

    With ``keep`` None only leftovers go. Snapshots are removed only while CURRENT names one of
    ``keep`` that exists (checked here again), so a damaged CURRENT never costs a snapshot.
    The caller holds the lock.
    """
    for p in index_dir.iterdir():
        if p.name.startswith((TMP_PREFIX, _DEL_PREFIX)):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name == _POINTER_TMP:
            p.unlink(missing_ok=True)
    if keep is not None:
        if current_snapshot(index_dir).name not in keep:
            raise AssertionError(f"clean-up of {index_dir} would remove the current snapshot")
        for name in snapshot_names(index_dir):
            if name not in keep:
                _delete_snapshot(index_dir, name)
    fsync_dir(index_dir)
    reach("cleanup-done")


def _delete_snapshot(index_dir: Path, name: str) -> None:
    aside = index_dir / f"{_DEL_PREFIX}{name}"
    try:
        os.replace(index_dir / name, aside)
        reach("cleanup-renamed-aside")
        for child in sorted(aside.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            reach("cleanup-deleting")
        aside.rmdir()
    except OSError as exc:
        # The commit is already durable; what is left is retried by the next writer.
        log.warning("Could not remove the old snapshot %s: %s", name, exc)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # Some file systems refuse fsync on a directory; their renames are then as durable as it gets.
    with contextlib.suppress(OSError):
        fsync_file(path)
