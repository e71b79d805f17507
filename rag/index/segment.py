"""Segments: the immutable parts of an index, each written once by one commit or one merge.

A segment directory (``segments/seg-N``) holds:

* ``rows.sqlite``: its documents and chunks (text, source, page, character span, heading), the
  tables of :mod:`rag.index.docstore` without a full-text index;
* ``ids.npy``: its chunk ids, ascending; row i of the vectors belongs to chunk ``ids[i]``;
* ``vectors.npy`` (exact) or ``vectors.ivf`` (approximate), see :mod:`rag.index.vectors`;
* ``lexical/``: the tantivy postings of its chunks, see :mod:`rag.index.lexical`.

A segment is built in a hidden directory (``segments/.tmp-seg-*``), fsynced, and renamed into
place before any manifest names it; nothing changes it afterwards. What a later commit deletes
from it is a tombstone in that commit's manifest (:class:`rag.index.manifest.SegmentInfo`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorrupt
from rag.index.crashpoints import reach
from rag.index.docstore import SEGMENT_SQL, DocumentRecord, list_documents
from rag.index.lexical import LEXICAL_DIR, LexicalSegment, write_lexical
from rag.index.manifest import SegmentInfo, VectorIndex
from rag.index.snapshots import fsync_dir, fsync_file
from rag.index.vectors import (
    ANN_MIN_VECTORS,
    FLAT_FILE,
    IVF_FILE,
    NPROBE,
    SegmentVectors,
    write_flat,
    write_ivf,
)

SEGMENTS = "segments"
ROWS = "rows.sqlite"
IDS = "ids.npy"
TMP_SEGMENT = ".tmp-seg-"
_SEG_RE = re.compile(r"^seg-(\d{6,})$")
_RAW = "vectors.raw"  # float32 rows in the order added, while a segment is being built


def segment_names(index_dir: Path) -> list[str]:
    """The ``seg-N`` directories of ``index_dir``, oldest first."""
    root = index_dir / SEGMENTS
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if _SEG_RE.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda n: int(n.split("-")[1]))


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk row, as copied between segments."""

    id: int
    seq: int
    page: int | None
    page_label: str | None
    section: str | None
    start: int
    end: int
    tokens: int
    text: str
    heading: str | None


_CHUNK_COLUMNS = "id, seq, page, page_label, section, start, end, tokens, text, heading"
_DOC_COLUMNS = "id, source, sha256, kind, size, pages, title, added_at"


class SegmentBuilder:
    """A new segment in a hidden directory of ``segments/``; :meth:`publish` names it."""

    def __init__(self, index_dir: Path, dimension: int) -> None:
        root = index_dir / SEGMENTS
        root.mkdir(parents=True, exist_ok=True)
        self.index_dir = index_dir
        self.dimension = dimension
        self.dir = Path(tempfile.mkdtemp(prefix=TMP_SEGMENT, dir=root))
        self.dir.chmod(0o755)
        self.db = sqlite3.connect(self.dir / ROWS)
        # No journal and no syncs while the segment is private: a crash discards the whole
        # directory, and finish() fsyncs every file before anything names it.
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.executescript(f"BEGIN; {SEGMENT_SQL} COMMIT;")
        self._raw = open(self.dir / _RAW, "wb")  # noqa: SIM115 - closed by finish / discard
        self._ids: list[np.ndarray] = []
        self._dropped: set[int] = set()
        self.documents = 0
        self.chunks = 0

    # -- rows --
    def add_document(
        self,
        doc: tuple[int, str, str, str, int, int, str | None, str],
        chunks: Sequence[ChunkRow],
        vectors: np.ndarray,
    ) -> None:
        """One document row (``_DOC_COLUMNS``), its chunk rows and their vectors (row i of
        ``vectors`` belongs to ``chunks[i]``)."""
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk is required")
        self.db.execute(
            f"INSERT INTO documents({_DOC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", doc
        )
        self.db.executemany(
            f"INSERT INTO chunks({_CHUNK_COLUMNS}, doc_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.id, c.seq, c.page, c.page_label, c.section, c.start, c.end, c.tokens, c.text,
              c.heading, doc[0]) for c in chunks],
        )  # fmt: skip
        if len(chunks):
            self._raw.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
            self._ids.append(np.fromiter((c.id for c in chunks), dtype=np.int64))
        self.documents += 1
        self.chunks += len(chunks)

    def remove_document(self, doc_id: int) -> int:
        """Take back a document added to this builder; returns its number of chunks."""
        ids = {r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))}
        self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        self._dropped |= ids
        self.documents -= 1
        self.chunks -= len(ids)
        return len(ids)

    def find_source(self, source: str) -> DocumentRecord | None:
        found = list_documents(self.db, "d.source = ?", [source])
        return found[0] if found else None

    def find_document(self, doc_id: int) -> DocumentRecord | None:
        found = list_documents(self.db, "d.id = ?", [doc_id])
        return found[0] if found else None

    # -- finish --
    def finish(self, ann: bool | None = None) -> VectorIndex:
        """Write the vectors (IVF when ``ann``, or by default from ANN_MIN_VECTORS rows), the ids
        and the postings, and fsync every file. The directory is complete but not yet named."""
        self.db.commit()
        reach("commit-sqlite-committed")
        self.db.close()
        self._raw.close()
        raw_path = self.dir / _RAW
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        raw: np.ndarray = (
            np.memmap(raw_path, dtype=np.float32, mode="r", shape=(len(ids), self.dimension))
            if len(ids)
            else np.zeros((0, self.dimension), dtype=np.float32)  # an empty file cannot be mapped
        )
        keep = np.ones(len(ids), dtype=bool)
        if self._dropped:
            keep = ~np.isin(ids, np.fromiter(self._dropped, dtype=np.int64))
        order = np.argsort(ids, kind="stable")
        order = order[keep[order]]
        sorted_ids = ids[order]
        if len(sorted_ids) != self.chunks or np.any(np.diff(sorted_ids) <= 0):
            raise AssertionError("segment chunk ids are not unique")
        np.save(self.dir / IDS, sorted_ids)
        identity = len(order) == len(ids) and bool(np.all(order == np.arange(len(ids))))
        vectors = raw if identity else _Gathered(raw, order, self.dimension)
        use_ann = len(sorted_ids) >= ANN_MIN_VECTORS if ann is None else ann and len(sorted_ids) > 0
        built = write_ivf(self.dir / IVF_FILE, vectors) if use_ann else None
        if built is not None:
            info = VectorIndex(
                kind="ivf_flat", nlist=built.nlist, nprobe=built.nprobe, recall_at_10=built.recall
            )
        else:
            write_flat(self.dir / FLAT_FILE, vectors)
            info = VectorIndex(kind="flat")
        del raw, vectors
        raw_path.unlink()
        reach("commit-vectors-written")
        db = sqlite3.connect(self.dir / ROWS)
        try:
            rows = db.execute("SELECT id, doc_id, page, text, heading FROM chunks ORDER BY id")
            write_lexical(self.dir / LEXICAL_DIR, rows)
        finally:
            db.close()
        reach("commit-lexical-written")
        for p in sorted(self.dir.rglob("*"), reverse=True):
            fsync_file(p) if p.is_file() else fsync_dir(p)
        fsync_dir(self.dir)
        reach("commit-segment-synced")
        return info

    def publish(self, name: str) -> Path:
        """Give the finished segment its name; durable once this returns."""
        target = self.index_dir / SEGMENTS / name
        os.replace(self.dir, target)
        reach("commit-segment-renamed")
        fsync_dir(self.index_dir / SEGMENTS)
        self.dir = target
        return target

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()
        with contextlib.suppress(Exception):
            self._raw.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Gathered:
    """Rows of a memory-mapped array in another order, read in batches (an ndarray stand-in for
    the vector writers, which use ``shape`` and indexing only)."""

    def __init__(self, raw: np.ndarray, order: np.ndarray, dimension: int) -> None:
        self._raw, self._order = raw, order
        self.shape = (len(order), dimension)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._raw[self._order[key]])


class SegmentReader:
    """A read-only view of one segment with the tombstones of one snapshot."""

    def __init__(self, index_dir: Path, info: SegmentInfo, dimension: int) -> None:
        self.info = info
        self.dir = index_dir / SEGMENTS / info.name
        if not self.dir.is_dir():
            raise FileNotFoundError(f"segment {self.dir} is missing")
        self.db = sqlite3.connect(
            f"file:{self.dir / ROWS}?mode=ro", uri=True, check_same_thread=False
        )
        self._ids: np.ndarray | None = np.load(self.dir / IDS, mmap_mode="r")
        self._vectors: SegmentVectors | None = SegmentVectors(
            self.dir, dimension, nprobe=info.vectors.nprobe or NPROBE
        )
        self.lexical = LexicalSegment(self.dir / LEXICAL_DIR)
        self.deleted = frozenset(info.deleted_documents)
        self.deleted_sorted = sorted(self.deleted)  # for the postings' exclusion, per question
        self._live: np.ndarray | None = None
        self._live_lock = threading.Lock()

    def close(self) -> None:
        """Release the connection, the memory maps (each holds a descriptor) and the postings
        now: a closed reader may stay referenced for a while (a finished request, a stream's
        frame), and until collected it would keep them, and tantivy's watcher thread, open."""
        self.db.close()
        if self.lexical is not None:  # None for a schema 1-2 snapshot
            self.lexical.close()
        self._ids = self._vectors = self._live = None

    @property
    def ids(self) -> np.ndarray:
        """The segment's chunk ids, ascending; row i of the vectors belongs to ``ids[i]``."""
        if self._ids is None:
            raise ValueError(f"segment {self.info.name} is closed")
        return self._ids

    @property
    def vectors(self) -> SegmentVectors:
        if self._vectors is None:
            raise ValueError(f"segment {self.info.name} is closed")
        return self._vectors

    @property
    def live(self) -> np.ndarray | None:
        """A bool mask of the rows not tombstoned (None when nothing is)."""
        if not self.deleted:
            return None
        with self._live_lock:
            if self._live is None:
                live = np.ones(len(self.ids), dtype=bool)
                live[self.positions(self.chunk_ids_of(self.deleted))] = False
                self._live = live
            return self._live

    def chunk_ids_of(self, doc_ids: Iterable[int]) -> np.ndarray:
        docs = [int(d) for d in doc_ids]
        out: list[int] = []
        for lo in range(0, len(docs), 10_000):
            batch = docs[lo : lo + 10_000]
            out += [r[0] for r in self.db.execute(
                f"SELECT id FROM chunks WHERE doc_id IN ({','.join('?' * len(batch))})", batch
            )]  # fmt: skip
        return np.asarray(sorted(out), dtype=np.int64)

    def positions(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``chunk_ids``, which must be in this segment: an id that is not would
        otherwise get a neighbour's row, and its vector or postings be another chunk's."""
        ids = self.ids
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        pos = np.asarray(np.searchsorted(ids, chunk_ids), dtype=np.int64)
        if len(chunk_ids):
            found = (
                np.asarray(ids[np.minimum(pos, len(ids) - 1)] == chunk_ids)
                if len(ids)
                else np.zeros(len(chunk_ids), dtype=bool)
            )
            if not found.all():
                missing = chunk_ids[~found][:5].tolist()
                raise IndexCorrupt(
                    f"Segment {self.dir} holds no chunk {missing} that its rows or manifest "
                    "name; run `rag index verify`."
                )
        return pos

    def holds(self, chunk_ids: np.ndarray) -> np.ndarray:
        """A bool mask: which of ``chunk_ids`` are live rows of this segment (a moved document
        keeps its chunk ids in its new segment, tombstoned in the old one)."""
        if not len(self.ids):
            return np.zeros(len(chunk_ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, chunk_ids), len(self.ids) - 1)
        found = np.asarray(self.ids[pos] == chunk_ids)
        live = self.live
        return found if live is None else found & live[pos]

    def documents(
        self,
        where: str | None = None,
        args: Sequence[Any] = (),
        *,
        deleted: Collection[int] | None = None,
    ) -> list[DocumentRecord]:
        """The documents that match ``where``, but those ``deleted`` (default: the tombstones)."""
        deleted = self.deleted if deleted is None else deleted
        found = list_documents(self.db, where, args)
        return [d for d in found if d.id not in deleted] if deleted else found

    def chunk_rows(self, doc_id: int) -> tuple[list[ChunkRow], np.ndarray]:
        """A document's chunk rows, by id, and their vectors (for copying it to a new segment)."""
        rows = [ChunkRow(*r) for r in self.db.execute(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE doc_id = ? ORDER BY id", (doc_id,)
        )]  # fmt: skip
        ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
        return rows, self.vectors.rows(self.positions(ids))

    def document_row(self, doc_id: int) -> tuple[int, str, str, str, int, int, str | None, str]:
        row = self.db.execute(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no document with id {doc_id} in segment {self.info.name}")
        return tuple(row)
