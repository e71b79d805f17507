"""Publishing a manifest as the committed snapshot, naming new segments, and removing the
segments that no snapshot on disk lists any more."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from rag.errors import IndexCorrupt, IndexNotFound
from rag.index.crashpoints import reach
from rag.index.manifest import MANIFEST, Manifest, SegmentInfo, now, package_versions, read_manifest
from rag.index.segment import SEGMENTS, TMP_SEGMENT, segment_names
from rag.index.snapshots import (
    TMP_PREFIX,
    current_snapshot,
    fsync_dir,
    fsync_file,
    publish,
    remove_stale,
    snapshot_names,
)

log = logging.getLogger(__name__)
_DEL_SEGMENT = ".del-seg-"


def take_segment_name(index_dir: Path, manifest: Manifest) -> tuple[str, Manifest]:
    """A name for a new segment, and ``manifest`` with it counted as taken (publish that).

    The number comes from the manifest's counter, so a name is never given twice even once every
    segment that had it is gone; it is never below what a directory or a snapshot on disk uses,
    which is where a manifest written before the counter starts from."""
    numbers = [int(n.split("-")[1]) for n in segment_names(index_dir)]
    for name in snapshot_names(index_dir):
        try:
            numbers += [int(s.name.split("-")[1]) for s in read_manifest(index_dir / name).segments]
        except IndexCorrupt:
            continue
    number = max(manifest.next_segment, max(numbers, default=0) + 1)
    return f"seg-{number:06d}", manifest.model_copy(update={"next_segment": number + 1})


def publish_manifest(index_dir: Path, manifest: Manifest, segments: list[SegmentInfo]) -> Path:
    """Write a snapshot whose manifest lists ``segments`` and make it the committed one; the
    manifest's counts are recomputed from the segments. The caller holds the lock."""
    manifest = manifest.model_copy(
        update={
            "segments": segments,
            "documents": sum(i.documents - len(i.deleted_documents) for i in segments),
            "chunks": sum(i.live_chunks for i in segments),
            "updated_at": now(),
            "versions": package_versions(),
        }
    )
    work = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=index_dir))
    work.chmod(0o755)
    (work / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", "utf-8")
    reach("commit-manifest-written")
    fsync_file(work / MANIFEST)
    reach("commit-files-synced")
    return publish(index_dir, work)


def referenced_segments(index_dir: Path) -> set[str] | None:
    """Every segment that a snapshot on disk lists; None when a snapshot's manifest cannot be
    read (then nothing may be removed)."""
    names: set[str] = set()
    for snap in snapshot_names(index_dir):
        try:
            names |= {s.name for s in read_manifest(index_dir / snap).segments}
        except IndexCorrupt:
            return None
    return names


def remove_unreferenced_segments(index_dir: Path) -> None:
    """Remove unfinished segments (``.tmp-seg-*``, ``.del-seg-*``) and, while CURRENT names a
    readable snapshot, every segment that no snapshot on disk lists. The caller holds the lock."""
    root = index_dir / SEGMENTS
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith((TMP_SEGMENT, _DEL_SEGMENT)):
            shutil.rmtree(p, ignore_errors=True)
    try:
        read_manifest(current_snapshot(index_dir))
    except (IndexCorrupt, IndexNotFound):
        return  # a damaged index keeps every segment for `rag index recover`
    keep = referenced_segments(index_dir)
    if keep is None:
        return
    for name in segment_names(index_dir):
        if name in keep:
            continue
        aside = root / f"{_DEL_SEGMENT}{name}"
        try:
            os.replace(root / name, aside)
            reach("cleanup-segment-aside")
            shutil.rmtree(aside)
        except OSError as exc:
            log.warning("Could not remove the unused segment %s: %s", name, exc)
    fsync_dir(root)


def clean_up_after(index_dir: Path, snap: Path, keep: set[str]) -> str | None:
    """After ``snap`` was published: remove the snapshots other than ``keep`` and the segments
    that no snapshot lists. A failure is returned as the warning to show, not raised: the data is
    in and durable, and the leftovers cost disk space only (the next write retries)."""
    try:
        remove_stale(index_dir, keep=keep)
        remove_unreferenced_segments(index_dir)
    except Exception as exc:
        return (
            f"The commit is in ({snap.name}), but removing old snapshots or segments after it "
            f"failed: {exc}. They only take disk space and the next write retries; run "
            f"`rag index verify --index {index_dir}` to check the index."
        )
    return None
