"""Merging segments: a tiered policy run after each write, and ``rag index optimize``.

A merge copies the live rows and vectors of some segments into one new segment (ids, vectors and
texts as they are: nothing is embedded again), rebuilds its postings, and publishes a manifest
where that segment replaces them, in a commit of its own. Tombstoned rows are dropped on the way.

The policy keeps the number of segments logarithmic in the size of the index, so that a query
touches few of them while a write still costs the change: segments fall in tiers by their live
chunks (powers of ``TIER_FACTOR``), and a tier of ``TIER_FACTOR`` or more segments is merged into
one segment of the next tier. A chunk is thus copied about once per tier over its life
(amortised O(log N) per chunk), and a small write merges only small segments. A segment with
more than ``MAX_DELETED`` of its chunks tombstoned is rewritten on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rag.index.commits import publish_manifest, take_segment_name
from rag.index.crashpoints import reach
from rag.index.manifest import Manifest, SegmentInfo, read_manifest
from rag.index.reader import open_segments
from rag.index.segment import SegmentBuilder, SegmentReader
from rag.index.vectors import ANN_MIN_VECTORS

TIER_FACTOR = 10
MAX_DELETED = 0.5
_MIN_TIER = 1_000  # segments below this many live chunks share the lowest tier


def tier(info: SegmentInfo) -> int:
    return int(math.log(max(info.live_chunks, _MIN_TIER) / _MIN_TIER, TIER_FACTOR))


def plan_merge(segments: Sequence[SegmentInfo]) -> list[str]:
    """The segments one merge step should combine now (empty: nothing is worth merging)."""
    by_tier: dict[int, list[SegmentInfo]] = {}
    for info in segments:
        by_tier.setdefault(tier(info), []).append(info)
    for t in sorted(by_tier):
        if len(by_tier[t]) >= TIER_FACTOR:
            return [i.name for i in by_tier[t]]
    for info in segments:
        if info.chunks and info.deleted_chunks > MAX_DELETED * info.chunks:
            return [info.name]
    return []


def merge(index_dir: Path, snapshot: Path, names: Sequence[str], ann: bool | None = None) -> Path:
    """Replace the segments ``names`` of the committed ``snapshot`` by one merged segment and
    publish that as a new snapshot. The caller holds the writer lock."""
    manifest = read_manifest(snapshot)
    chosen = [i for i in manifest.segments if i.name in set(names)]
    readers = open_segments(index_dir, snapshot, manifest.model_copy(update={"segments": chosen}))
    builder = SegmentBuilder(index_dir, manifest.dimension)
    try:
        for seg in readers:
            _copy_live(seg, builder)
        reach("merge-rows-copied")
        if builder.documents:
            vector_index = builder.finish(ann)
            name, manifest = take_segment_name(index_dir, manifest)
            builder.publish(name)
            merged = [SegmentInfo(name=name, documents=builder.documents, chunks=builder.chunks,
                                  vectors=vector_index)]  # fmt: skip
        else:
            builder.discard()
            merged = []
    except BaseException:
        builder.discard()
        raise
    finally:
        for seg in readers:
            seg.close()
    # The merged segment takes the place of the first segment it replaces: order is by age.
    out: list[SegmentInfo] = []
    for info in manifest.segments:
        if info.name not in set(names):
            out.append(info)
        elif merged:
            out += merged
            merged = []
    return publish_manifest(index_dir, manifest, out)


def _copy_live(seg: SegmentReader, builder: SegmentBuilder) -> None:
    for doc in sorted(seg.documents(), key=lambda d: d.id):
        rows, vectors = seg.chunk_rows(doc.id)
        builder.add_document(seg.document_row(doc.id), rows, np.asarray(vectors))


def merge_by_policy(index_dir: Path, snapshot: Path) -> Path:
    """Merge by the tiered policy until nothing is worth merging; the last snapshot published."""
    for _ in range(64):  # each step removes at least one segment; the bound is a safety net
        names = plan_merge(read_manifest(snapshot).segments)
        if not names:
            break
        snapshot = merge(index_dir, snapshot, names)
    return snapshot


def optimize_plan(manifest: Manifest) -> list[str]:
    """What ``rag index optimize`` merges: everything, unless the index already is one segment
    without tombstones (and with an approximate index where its size calls for one)."""
    segs = manifest.segments
    if not segs:
        return []
    if len(segs) == 1 and not segs[0].deleted_documents:
        wants_ann = segs[0].chunks >= ANN_MIN_VECTORS
        if wants_ann == (segs[0].vectors.kind == "ivf_flat"):
            return []
    return [s.name for s in segs]
