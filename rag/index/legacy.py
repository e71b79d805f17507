"""Indexes of schema 1 and 2 (one SQLite document store with FTS5 and one FAISS file per
snapshot), read as they are: a query opens such an index as a single segment, and the next
write converts it to a segment (:func:`convert`) without embedding anything again."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rag.index.docstore import MIGRATE_1_TO_2
from rag.index.lexical import fts_query
from rag.index.manifest import DOCSTORE, VECTORS, Manifest, SegmentInfo
from rag.index.segment import ChunkRow, SegmentBuilder, SegmentReader
from rag.index.vectors import SegmentVectors, faiss_module


def read_vectors(snapshot: Path) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids ascending, their vectors) of a schema 1-2 snapshot's ``vectors.faiss``."""
    faiss = faiss_module()
    index = faiss.read_index(str(snapshot / VECTORS))
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    flat = faiss.downcast_index(index.index)
    rows = faiss.vector_to_array(flat.codes).view(np.float32).reshape(index.ntotal, index.d)
    order = np.argsort(ids, kind="stable")
    return ids[order], np.array(rows[order], dtype=np.float32)


class LegacySegment(SegmentReader):
    """A schema 1-2 snapshot seen as one segment; its lexical side is the FTS5 table."""

    def __init__(self, snapshot: Path, manifest: Manifest) -> None:
        # Deliberately not SegmentReader.__init__: the files differ, the interface is the same.
        self.info = SegmentInfo(
            name=snapshot.name, documents=manifest.documents, chunks=manifest.chunks
        )
        self.dir = snapshot
        self.schema_version = manifest.schema_version
        self.db = sqlite3.connect(
            f"file:{snapshot / DOCSTORE}?mode=ro", uri=True, check_same_thread=False
        )
        ids, rows = read_vectors(snapshot)
        self._ids = ids
        self._vectors = SegmentVectors(None, manifest.dimension, rows=rows)
        self.lexical = None  # type: ignore[assignment]
        self.deleted = frozenset()
        self.deleted_sorted = []
        self._live = None
        self._live_lock = threading.Lock()

    def fts_search(self, text: str, k: int, where: str, args: list[Any]) -> list[tuple[int, float]]:
        """BM25 over FTS5 (Porter stemming); scores negated so that higher is better."""
        match = fts_query(text)
        if match is None:
            return []
        # Headings count as much as the text (nDCG@10 on SciFact 0.666 -> 0.684).
        bm25 = "bm25(chunks_fts, 1.0, 1.0)" if self.schema_version >= 2 else "bm25(chunks_fts)"
        if where:
            sql = (
                f"SELECT chunks_fts.rowid, {bm25} FROM chunks_fts "
                "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.doc_id "
                f"WHERE chunks_fts MATCH ? AND {where}"
            )
        else:
            sql = f"SELECT rowid, {bm25} FROM chunks_fts WHERE chunks_fts MATCH ?"
        sql += f" ORDER BY {bm25} LIMIT ?"
        return [(int(i), -float(s)) for i, s in self.db.execute(sql, [match, *args, k])]


def convert(snapshot: Path, manifest: Manifest, builder: SegmentBuilder) -> None:
    """Copy every document, chunk and vector of a schema 1-2 snapshot into ``builder``, with
    their ids. A schema 1 store gains its headings on the way (``MIGRATE_1_TO_2``)."""
    src = sqlite3.connect(f"file:{snapshot / DOCSTORE}?mode=ro", uri=True)
    if manifest.schema_version < 2:
        mem = sqlite3.connect(":memory:")
        src.backup(mem)
        src.close()
        mem.executescript(MIGRATE_1_TO_2)
        src = mem
    try:
        ids, rows = read_vectors(snapshot)
        docs = src.execute(
            "SELECT id, source, sha256, kind, size, pages, title, added_at FROM documents "
            "ORDER BY id"
        ).fetchall()
        for doc in docs:
            chunks = [ChunkRow(*r) for r in src.execute(
                "SELECT id, seq, page, page_label, section, start, end, tokens, text, heading "
                "FROM chunks WHERE doc_id = ? ORDER BY id", (doc[0],)
            )]  # fmt: skip
            pos = np.searchsorted(ids, np.fromiter((c.id for c in chunks), dtype=np.int64))
            builder.add_document(tuple(doc), chunks, rows[pos])
    finally:
        src.close()


def id_floors(snapshot: Path) -> tuple[int, int]:
    """The largest (document id, chunk id) a schema 1-2 index ever gave, deleted chunks included."""
    db = sqlite3.connect(f"file:{snapshot / DOCSTORE}?mode=ro", uri=True)
    try:
        top = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0])
        docs = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM documents").fetchone()[0])
        try:  # the id of the last deleted chunk, recorded since schema 2
            row = db.execute("SELECT value FROM meta WHERE key = 'max_chunk_id'").fetchone()
        except sqlite3.OperationalError:
            row = None
    finally:
        db.close()
    return docs, max(top, int(row[0]) if row else 0)
