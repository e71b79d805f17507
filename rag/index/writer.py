"""Changes to an index: new segments and tombstones, published atomically by one rename.

A write adds at most one new segment (the documents it adds) and tombstones (the documents it
deletes from existing segments), then publishes a snapshot whose manifest lists the segments with
their tombstones (see :mod:`rag.index.snapshots` for publishing, the lock and clean-up). So a
commit costs the change, not the index: nothing already written is copied or rewritten. Readers
open whatever CURRENT names, so they see the old or the new index, never a mix, and a crash at
any moment leaves the last committed snapshot intact.

Merges (:mod:`rag.index.merging`) replace several segments by one without their tombstoned rows,
in a commit of their own.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from rag.errors import IndexCorrupt
from rag.index.commits import (
    clean_up_after,
    publish_manifest,
    remove_unreferenced_segments,
    take_segment_name,
)
from rag.index.crashpoints import reach
from rag.index.docstore import DocumentRecord, NewChunk, list_documents, match_patterns_in
from rag.index.legacy import LegacySegment, convert, id_floors
from rag.index.manifest import Manifest, SegmentInfo, check_same_build, now, read_manifest
from rag.index.merging import merge_by_policy
from rag.index.reader import open_segments
from rag.index.segment import ChunkRow, SegmentBuilder, SegmentReader
from rag.index.snapshots import (
    current_name,
    current_snapshot,
    lock,
    recovery_hint,
    remove_stale,
    snapshot_names,
)

log = logging.getLogger(__name__)


class StoreWriter:
    """Changes to an index, published atomically by :meth:`commit`. Use :func:`open_writer`."""

    def __init__(self, index_dir: Path, manifest: Manifest, base: Path | None) -> None:
        self.index_dir = index_dir
        self._base = base
        self._committed = False
        self.migrated = False
        # What went wrong after the commit was published (a merge, a clean-up): the data is in,
        # so these are warnings for the caller to show, with what to run, not errors.
        self.warnings: list[str] = []
        self._segments: list[SegmentReader] = []
        self._builder: SegmentBuilder | None = None
        self._deleted: dict[str, set[int]] = {}  # segment -> documents deleted by this write
        self._deleted_chunks: dict[str, int] = {}  # segment -> their chunks
        self._legacy: tuple[LegacySegment, Manifest] | None = None
        if base is not None and not manifest.segmented:
            # A schema 1-2 index is read as it is; the first change converts it (_convert).
            docs_floor, chunks_floor = id_floors(base)
            self._legacy = (LegacySegment(base, manifest), manifest)
            self._segments = [self._legacy[0]]
            manifest = manifest.model_copy(
                update={
                    "schema_version": Manifest.model_fields["schema_version"].default,
                    "index_type": Manifest.model_fields["index_type"].default,
                    "segments": [],
                    "next_document_id": docs_floor + 1,
                    "next_chunk_id": chunks_floor + 1,
                }
            )
        elif base is not None:
            self._segments = open_segments(index_dir, base, manifest)
        self.manifest = manifest
        reach("writer-opened")

    # -- reads --
    def _live(self) -> Iterator[tuple[SegmentReader, frozenset[int]]]:
        """Each segment with its deleted documents: its tombstones and this write's."""
        for seg in self._segments:
            yield seg, seg.deleted | frozenset(self._deleted.get(seg.info.name, ()))

    def find_source(self, source: str) -> DocumentRecord | None:
        if self._builder is not None:
            found = self._builder.find_source(source)
            if found is not None:
                return found
        for seg, deleted in self._live():
            docs = seg.documents("d.source = ?", [source], deleted=deleted)
            if docs:
                return docs[0]
        return None

    def counts(self) -> tuple[int, int]:
        """(documents, chunks) that a commit now would hold."""
        docs = chunks = 0
        for seg in self._segments:
            info = self._info_of(seg)
            docs += info.documents - len(info.deleted_documents)
            chunks += info.live_chunks
        if self._builder is not None:
            docs += self._builder.documents
            chunks += self._builder.chunks
        return docs, chunks

    def documents(self) -> list[DocumentRecord]:
        docs = [d for seg, deleted in self._live() for d in seg.documents(deleted=deleted)]
        if self._builder is not None:
            docs += self._builder_documents()
        return sorted(docs, key=lambda d: d.source)

    def match_patterns(self, patterns: Sequence[str]) -> tuple[list[DocumentRecord], list[str]]:
        """Documents whose source is, or matches the glob, one of ``patterns`` (see
        :func:`rag.index.docstore.match_patterns`), and the patterns that match nothing."""
        dbs: list[tuple[sqlite3.Connection, Collection[int]]] = [
            (seg.db, deleted) for seg, deleted in self._live()
        ]
        if self._builder is not None:
            dbs.append((self._builder.db, ()))
        return match_patterns_in(dbs, patterns)

    def _builder_documents(self) -> list[DocumentRecord]:
        assert self._builder is not None
        return list_documents(self._builder.db)

    # -- changes --
    def _convert(self) -> None:
        """Before the first change to a schema 1-2 index: copy its rows and vectors, with their
        ids, into this write's segment (nothing is embedded again)."""
        if self._legacy is None:
            return
        legacy, manifest = self._legacy
        builder = SegmentBuilder(self.index_dir, self.manifest.dimension)
        try:
            convert(legacy.dir, manifest, builder)
        except BaseException:
            builder.discard()
            raise
        legacy.close()
        self._legacy, self._segments, self._builder = None, [], builder
        self.migrated = True

    def _new_segment(self) -> SegmentBuilder:
        self._convert()
        if self._builder is None:
            self._builder = SegmentBuilder(self.index_dir, self.manifest.dimension)
        return self._builder

    def rename_document(self, doc_id: int, new_source: str) -> None:
        """Point a document at a new source (a moved file): its rows and vectors are copied, with
        their ids, to this write's segment under the new source (nothing is embedded again), and
        tombstoned where they were."""
        self._convert()
        if self._builder is not None and self._builder.find_document(doc_id) is not None:
            self._builder.db.execute(
                "UPDATE documents SET source = ? WHERE id = ?", (new_source, doc_id)
            )
            return
        seg = self._holder(doc_id)
        row = list(seg.document_row(doc_id))
        rows, vectors = seg.chunk_rows(doc_id)
        self._tombstone(seg, doc_id)
        row[1] = new_source
        self._new_segment().add_document(tuple(row), rows, vectors)  # type: ignore[arg-type]

    def add_document(
        self,
        *,
        source: str,
        sha256: str,
        kind: str,
        size: int,
        pages: int,
        title: str | None,
        chunks: Sequence[NewChunk],
        vectors: np.ndarray,
    ) -> int:
        """Store one document with its chunks and their vectors (row i belongs to chunk i)."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk is required")
        doc_id = self.manifest.next_document_id
        self.manifest = self.manifest.model_copy(update={"next_document_id": doc_id + 1})
        first = self._take_chunk_ids(len(chunks))
        rows = [
            ChunkRow(first + seq, seq, c.page, c.page_label, c.section, c.start, c.end, c.tokens,
                     c.text, " ".join(x for x in (title, c.section) if x) or None)
            for seq, c in enumerate(chunks)
        ]  # fmt: skip
        self._new_segment().add_document(
            (doc_id, source, sha256, kind, size, pages, title, now()), rows, vectors
        )
        return doc_id

    def delete_document(self, doc_id: int) -> int:
        """Remove a document, its chunks and their vectors; returns the number of chunks removed."""
        self._convert()
        if self._builder is not None and self._builder.find_document(doc_id) is not None:
            return self._builder.remove_document(doc_id)
        seg = self._holder(doc_id)
        return self._tombstone(seg, doc_id)

    def _take_chunk_ids(self, n: int) -> int:
        first = self.manifest.next_chunk_id
        self.manifest = self.manifest.model_copy(update={"next_chunk_id": first + n})
        return first

    def _holder(self, doc_id: int) -> SegmentReader:
        for seg, deleted in self._live():
            if seg.documents("d.id = ?", [doc_id], deleted=deleted):
                return seg
        raise KeyError(f"no document with id {doc_id}")

    def _tombstone(self, seg: SegmentReader, doc_id: int) -> int:
        chunks = len(seg.chunk_ids_of([doc_id]))
        self._deleted.setdefault(seg.info.name, set()).add(doc_id)
        self._deleted_chunks[seg.info.name] = self._deleted_chunks.get(seg.info.name, 0) + chunks
        return chunks

    def _info_of(self, seg: SegmentReader) -> SegmentInfo:
        """A segment's entry in the next manifest: its tombstones plus this write's."""
        extra = self._deleted.get(seg.info.name)
        if not extra:
            return seg.info
        return seg.info.model_copy(
            update={
                "deleted_documents": sorted(set(seg.info.deleted_documents) | extra),
                "deleted_chunks": seg.info.deleted_chunks + self._deleted_chunks[seg.info.name],
            }
        )

    # -- publish --
    def commit(self, merge: bool = True) -> Path:
        """Write the new segment, then atomically publish a manifest that lists it; then, with
        ``merge``, merge segments where the tiered policy says it is worth it (each merge a
        commit of its own). Returns the last snapshot published. A schema 1-2 index is
        converted by its first commit, even one that changes nothing else."""
        self._convert()
        infos = [self._info_of(seg) for seg in self._segments]
        if self._builder is not None and self._builder.documents:
            vector_index = self._builder.finish()
            name, self.manifest = take_segment_name(self.index_dir, self.manifest)
            self._builder.publish(name)
            infos.append(
                SegmentInfo(
                    name=name,
                    documents=self._builder.documents,
                    chunks=self._builder.chunks,
                    vectors=vector_index,
                )
            )
        elif self._builder is not None:
            self._builder.discard()
        self._builder = None
        infos = [i for i in infos if i.live_chunks > 0 or i.documents > len(i.deleted_documents)]
        snap = publish_manifest(self.index_dir, self.manifest, infos)
        self._committed = True
        self.close()
        # The data is durable from here on: what follows only tidies up, so its failure is
        # reported as a warning and the commit still returns (raising would make `rag ingest`
        # and uploads report a failure for data that is in the index).
        if merge:
            try:
                snap = merge_by_policy(self.index_dir, snap)
            except Exception as exc:
                # Merges publish one by one: CURRENT (ours, under the lock) names the last.
                snap = current_snapshot(self.index_dir)
                self._warn(
                    f"The commit is in ({snap.name}), but merging segments after it failed: "
                    f"{exc}. The index answers as it is; run `rag index optimize --index "
                    f"{self.index_dir}` to merge (a later write also retries)."
                )
        self.manifest = read_manifest(snap)
        # The snapshot this write started from stays for readers that read CURRENT just before
        # it moved on; older ones (and snapshots of interrupted writes) go, then the segments
        # that no snapshot left on disk lists.
        keep = {snap.name} | ({self._base.name} if self._base is not None else set())
        failed = clean_up_after(self.index_dir, snap, keep)
        if failed is not None:
            self._warn(failed)
        return snap

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)

    def close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments = []

    def abort(self) -> None:
        if self._builder is not None:
            self._builder.discard()
            self._builder = None
        self.close()


@contextlib.contextmanager
def open_writer(index_dir: str | Path, manifest: Manifest) -> Iterator[StoreWriter]:
    """Lock ``index_dir`` for writing and yield a writer on its committed snapshot.

    ``manifest`` describes the settings of this write; an existing index built with other
    embedding or chunking parameters is refused. Nothing is published unless the writer's
    :meth:`StoreWriter.commit` is called; an exception discards what was written.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with lock(index_dir):
        reach("lock-taken")
        committed = committed_base(index_dir)
        base: Path | None = None
        if committed is not None:
            base, existing = committed
            check_same_build(existing, manifest, index_dir)
            manifest = existing
        with open_writer_locked(index_dir, base, manifest) as writer:
            yield writer


@contextlib.contextmanager
def open_writer_locked(
    index_dir: Path, base: Path | None, manifest: Manifest
) -> Iterator[StoreWriter]:
    """:func:`open_writer` for a caller that holds the lock and read the committed ``base``."""
    clean_at_lock(index_dir, base)
    reach("lock-cleaned")
    writer = StoreWriter(index_dir, manifest, base)
    try:
        yield writer
    finally:
        if not writer._committed:
            writer.abort()


def clean_at_lock(index_dir: Path, base: Path | None) -> None:
    """What a writer removes when it takes the lock: snapshots of interrupted writes and older
    ones (the committed ``base`` and the one before it stay), and segments none of them lists."""
    remove_stale(index_dir, keep=_keep_at_lock(index_dir, base))
    if base is not None:
        remove_unreferenced_segments(index_dir)


def committed_base(index_dir: Path) -> tuple[Path, Manifest] | None:
    """The committed snapshot and its manifest; None when nothing was ever committed.

    A damaged CURRENT or an unreadable manifest raises IndexCorrupt here, before any clean-up, so
    every snapshot stays on disk for ``rag index recover``.
    """
    if current_name(index_dir) is None:
        return None
    snap = current_snapshot(index_dir)
    try:
        return snap, read_manifest(snap)
    except IndexCorrupt as exc:
        raise IndexCorrupt(f"{exc}. {recovery_hint(index_dir)}") from exc


def _keep_at_lock(index_dir: Path, base: Path | None) -> set[str] | None:
    """Snapshots a new writer keeps: the committed one and the one before it (for readers)."""
    if base is None:
        return None  # nothing committed: no snapshot may be deleted
    number = int(base.name.split("-")[1])
    older = [n for n in snapshot_names(index_dir) if int(n.split("-")[1]) < number]
    return {base.name, *older[-1:]}
