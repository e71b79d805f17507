"""The index directory: FAISS vectors, a SQLite document store and a manifest, with no pickle.

Layout::

    INDEX/
      CURRENT            name of the committed snapshot, replaced atomically
      snap-000003/       one committed snapshot
        manifest.json    provenance: embedder, dimension, tokenizer, chunking, versions, counts
        vectors.faiss    faiss.IndexIDMap2(IndexFlatIP); ids are chunk ids
        docstore.sqlite  documents, chunks (text, source, page, character span) and an FTS5 index
      .lock              held by the one writer

A writer copies the committed snapshot aside, changes the copy and publishes it by replacing
CURRENT, a single atomic rename. Readers open whatever CURRENT names, so they see the old or the
new index, never a mix, and a crash at any moment leaves the last committed snapshot intact.
The snapshot mechanics (publishing, the lock, clean-up) live in :mod:`rag.snapshots`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from rag.crashpoints import reach
from rag.errors import IndexCorrupt, IndexMismatch
from rag.filters import Filters, source_glob_sql
from rag.snapshots import CURRENT as CURRENT  # re-exported: the name of the pointer file
from rag.snapshots import (
    TMP_PREFIX,
    current_name,
    current_snapshot,
    fsync_file,
    lock,
    publish,
    recovery_hint,
    remove_stale,
    snapshot_names,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: chunks.heading (document title and section) in the full-text index
INDEX_TYPE = "IndexIDMap2(IndexFlatIP)"
VECTORS = "vectors.faiss"
DOCSTORE = "docstore.sqlite"
MANIFEST = "manifest.json"
_FILTER_CACHE_SIZE = 16  # filters whose matching chunks a Store keeps (one bit per chunk id)
_ID_BATCH = 10_000  # ids bound per statement, well below SQLite's limit of 32,766 variables

# Version 1 indexes lack chunks.heading; their full-text index is rebuilt on the next write.
_MIGRATE_1_TO_2 = """
ALTER TABLE chunks ADD COLUMN heading TEXT;
UPDATE chunks SET heading = (
    SELECT TRIM(COALESCE(d.title, '') || ' ' || COALESCE(chunks.section, ''))
    FROM documents d WHERE d.id = chunks.doc_id
);
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    title TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_sha256 ON documents(sha256);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    page INTEGER,
    page_label TEXT,
    section TEXT,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, heading, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
    VALUES ('delete', old.id, old.text, old.heading);
END;
"""


class Manifest(BaseModel):
    """Provenance of an index; opening it with incompatible settings is refused."""

    schema_version: int = SCHEMA_VERSION
    embedder: str
    dimension: int
    normalized: bool = True
    tokenizer: str
    chunk_tokens: int
    chunk_overlap: int
    index_type: str = INDEX_TYPE
    documents: int = 0
    chunks: int = 0
    created_at: str = Field(default_factory=lambda: _now())
    updated_at: str = Field(default_factory=lambda: _now())
    versions: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class ChunkRecord:
    """One stored chunk with its provenance."""

    id: int
    source: str
    page: int | None
    page_label: str | None
    section: str | None
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store; ``start``/``end`` are character offsets into its page (or file) text."""

    text: str
    page: int | None
    page_label: str | None
    section: str | None
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    source: str
    sha256: str
    kind: str
    pages: int
    chunks: int


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("rag-toolkit", "faiss-cpu", "sentence-transformers", "transformers", "pypdf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _faiss() -> Any:
    import faiss

    return faiss


def read_manifest(snapshot: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((snapshot / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"Cannot read {snapshot / MANIFEST}: {exc}") from exc


class Store:
    """A read-only view of one committed snapshot."""

    def __init__(self, index_dir: Path, snapshot: Path, manifest: Manifest, vectors: Any) -> None:
        self.index_dir = index_dir
        self.snapshot = snapshot
        self.manifest = manifest
        self._vectors = vectors
        self._db = sqlite3.connect(
            f"file:{snapshot / DOCSTORE}?mode=ro", uri=True, check_same_thread=False
        )
        self._filter_cache: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._filter_lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path) -> Store:
        index_dir = Path(index_dir)
        # CURRENT may move on between reading it and opening the files; retry once.
        for attempt in range(3):
            snap = current_snapshot(index_dir)
            try:
                manifest = read_manifest(snap)
                vectors = _faiss().read_index(str(snap / VECTORS))
                return cls(index_dir, snap, manifest, vectors)
            except (RuntimeError, OSError, sqlite3.Error, IndexCorrupt) as exc:
                if attempt == 2 or snap == current_snapshot(index_dir):
                    raise IndexCorrupt(
                        f"Cannot open the index in {snap}: {exc}. {recovery_hint(index_dir)}"
                    ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ntotal(self) -> int:
        return int(self._vectors.ntotal)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest chunk ids by inner product, best first."""
        if self.ntotal == 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        scores, ids = self._vectors.search(q, min(k, self.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def search_ids(
        self, query: np.ndarray, k: int, allowed: Sequence[int] | np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Like :meth:`search`, restricted to the chunk ids in ``allowed`` (None: all)."""
        if allowed is None:
            return self.search(query, k)
        ids = np.asarray(allowed, dtype=np.int64)
        if len(ids) == 0 or self.ntotal == 0:
            return []
        return self._search_selected(query, k, _bitmap_selector(ids), len(ids))

    def search_filtered(
        self, query: np.ndarray, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """Like :meth:`search`, restricted to the chunks that match ``filters``.

        The set of matching chunks is read once per filter and kept as a bitmap: this store
        reads one immutable snapshot, so it cannot go stale, and a query costs no id loading.
        """
        if filters is None or filters.is_empty():
            return self.search(query, k)
        selector, matching = self._allowed(filters)
        if matching == 0 or self.ntotal == 0:
            return []
        return self._search_selected(query, k, selector, matching)

    def _search_selected(
        self, query: np.ndarray, k: int, selector: Any, matching: int
    ) -> list[tuple[int, float]]:
        params = _faiss().SearchParameters(sel=selector)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        scores, ids = self._vectors.search(q, min(k, matching, self.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _allowed(self, filters: Filters) -> tuple[Any, int]:
        """(faiss selector, number of chunks) for a filter, cached for the last few filters."""
        key = filters.key()
        with self._filter_lock:
            hit = self._filter_cache.get(key)
            if hit is not None:
                self._filter_cache.move_to_end(key)
                return hit
        ids = np.fromiter(
            (r[0] for r in self._db.execute(*self._filter_query(filters))), dtype=np.int64
        )
        entry = (_bitmap_selector(ids), len(ids))
        with self._filter_lock:
            self._filter_cache[key] = entry
            while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        return entry

    @staticmethod
    def _filter_query(filters: Filters) -> tuple[str, list[Any]]:
        where, args = filters.sql()
        sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id"
        return (sql + " WHERE " + where if where else sql), args

    def lexical_search(
        self, text: str, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best chunks by BM25 (SQLite FTS5, Porter stemming), best first.

        Scores are FTS5's bm25() negated, so that higher is better. ``filters`` joins the
        full-text index with the chunks and their documents, so a filter binds a handful of SQL
        variables whatever the number of chunks it matches.
        """
        from rag.lexical import fts_query

        match = fts_query(text)
        if match is None:
            return []
        # Headings (document title, section) count as much as the text: measured on BEIR SciFact,
        # nDCG@10 0.666 -> 0.684 over the text alone.
        bm25 = (
            "bm25(chunks_fts, 1.0, 1.0)"
            if self.manifest.schema_version >= 2
            else "bm25(chunks_fts)"
        )
        where, args = filters.sql() if filters is not None else ("", [])
        if where:
            sql = (
                f"SELECT chunks_fts.rowid, {bm25} FROM chunks_fts "
                "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.doc_id "
                f"WHERE chunks_fts MATCH ? AND {where}"
            )
        else:
            sql = f"SELECT rowid, {bm25} FROM chunks_fts WHERE chunks_fts MATCH ?"
        sql += f" ORDER BY {bm25} LIMIT ?"
        rows = self._db.execute(sql, [match, *args, k])
        return [(int(i), -float(s)) for i, s in rows]

    def filter_ids(
        self,
        *,
        source_glob: str | None = None,
        kinds: Sequence[str] | None = None,
        pages: tuple[int, int] | None = None,
    ) -> list[int]:
        """Ids of the chunks that match every given filter.

        ``source_glob`` matches the whole source path, or its file name when the pattern holds no
        slash (``*.pdf``, ``report-2023*``). ``pages`` is an inclusive 1-based range; chunks without
        a page (text files) never match a page range.
        """
        f = Filters(source_glob=source_glob, kinds=tuple(kinds) if kinds else None, pages=pages)
        return [int(r[0]) for r in self._db.execute(*self._filter_query(f))]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of chunks, in the order given."""
        if not ids:
            return np.zeros((0, self.manifest.dimension), dtype=np.float32)
        return np.stack([self._vectors.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def chunks(self, ids: Sequence[int]) -> list[ChunkRecord]:
        """Chunks by id, in the order given (unknown ids are left out)."""
        by_id: dict[int, ChunkRecord] = {}
        # In batches: SQLite binds at most 32,766 variables per statement.
        for lo in range(0, len(ids), _ID_BATCH):
            batch = [int(i) for i in ids[lo : lo + _ID_BATCH]]
            rows = self._db.execute(
                "SELECT c.id, d.source, c.page, c.page_label, c.section, c.start, c.end, c.text "
                "FROM chunks c JOIN documents d ON d.id = c.doc_id "
                f"WHERE c.id IN ({','.join('?' * len(batch))})",
                batch,
            )
            by_id.update((r[0], ChunkRecord(*r)) for r in rows)
        return [by_id[i] for i in ids if i in by_id]

    def documents(self) -> list[DocumentRecord]:
        return _documents(self._db)

    def counts(self) -> tuple[int, int]:
        docs = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)


def _bitmap_selector(ids: np.ndarray) -> Any:
    """A faiss selector of chunk ids: one bit per id up to the largest, so it stays small (an
    index of a million chunks takes 125 KB) and costs one bit test per scanned vector."""
    size = int(ids.max()) + 1 if len(ids) else 0
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = _faiss().IDSelectorBitmap(bitmap)
    selector.bitmap_array = bitmap  # the selector points into this array: keep it alive
    return selector


def _documents(
    db: sqlite3.Connection, where: str | None = None, args: Sequence[Any] = ()
) -> list[DocumentRecord]:
    sql = (
        "SELECT d.id, d.source, d.sha256, d.kind, d.pages, COUNT(c.id) FROM documents d "
        "LEFT JOIN chunks c ON c.doc_id = d.id"
    )
    if where:
        sql += f" WHERE {where}"
    rows = db.execute(sql + " GROUP BY d.id ORDER BY d.source", list(args)).fetchall()
    return [DocumentRecord(*r) for r in rows]


def verify(index_dir: str | Path) -> list[str]:
    """Problems found in the committed snapshot of ``index_dir``; an empty list when it is sound.

    Checks that CURRENT names a snapshot, that every chunk has exactly one vector (FAISS ids vs
    SQLite ids), that the manifest's counts and dimension match, and that SQLite and its
    full-text index are intact. Raises :class:`IndexNotFound` when there is no index at all.
    A damaged CURRENT is reported with the snapshots on disk and the recovery command.
    """
    try:
        snap = current_snapshot(Path(index_dir))
    except IndexCorrupt as exc:
        return [str(exc)]
    return verify_snapshot(snap)


def verify_snapshot(snap: Path) -> list[str]:
    """Problems found in one snapshot directory (see :func:`verify`); empty when it is sound."""
    try:
        manifest = read_manifest(snap)
    except IndexCorrupt as exc:
        return [str(exc)]
    problems: list[str] = []
    try:
        vectors = _faiss().read_index(str(snap / VECTORS))
    except (RuntimeError, OSError) as exc:
        return [f"Cannot read {snap / VECTORS}: {exc}"]
    try:
        src = sqlite3.connect(f"file:{snap / DOCSTORE}?mode=ro", uri=True)
        # A private in-memory copy: the FTS5 integrity check is an INSERT, refused read-only.
        db = sqlite3.connect(":memory:")
        src.backup(db)
        src.close()
    except sqlite3.Error as exc:
        return [f"Cannot read {snap / DOCSTORE}: {exc}"]
    try:
        quick = [r[0] for r in db.execute("PRAGMA quick_check")]
        if quick != ["ok"]:
            problems.append(f"{DOCSTORE}: SQLite integrity check failed: {'; '.join(quick[:5])}")
        docs, chunks = (int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                        for t in ("documents", "chunks"))  # fmt: skip
        chunk_ids = {int(r[0]) for r in db.execute("SELECT id FROM chunks")}
        orphans = db.execute(
            "SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunk(s) belong to no document")
        try:
            db.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.Error as exc:
            problems.append(f"full-text index (chunks_fts) disagrees with the chunks: {exc}")
    except sqlite3.Error as exc:
        return [f"Cannot read {snap / DOCSTORE}: {exc}"]
    finally:
        db.close()
    ntotal = int(vectors.ntotal)
    if ntotal != chunks:
        problems.append(f"{VECTORS} holds {ntotal} vectors but {DOCSTORE} {chunks} chunks")
    if int(vectors.d) != manifest.dimension:
        problems.append(
            f"vectors have dimension {vectors.d}, the manifest says {manifest.dimension}"
        )
    try:
        vector_ids = {int(i) for i in _faiss().vector_to_array(vectors.id_map)}
    except AttributeError:
        problems.append(f"{VECTORS} is not an id-mapped index ({type(vectors).__name__})")
        vector_ids = chunk_ids
    missing, extra = sorted(chunk_ids - vector_ids), sorted(vector_ids - chunk_ids)
    if missing:
        problems.append(f"{len(missing)} chunk(s) have no vector (ids {_some(missing)})")
    if extra:
        problems.append(f"{len(extra)} vector(s) belong to no chunk (ids {_some(extra)})")
    if (manifest.documents, manifest.chunks) != (docs, chunks):
        problems.append(
            f"{MANIFEST} records {manifest.documents} documents and {manifest.chunks} chunks, "
            f"{DOCSTORE} holds {docs} and {chunks}"
        )
    return problems


def _some(ids: Sequence[int], n: int = 5) -> str:
    return ", ".join(map(str, ids[:n])) + (", ..." if len(ids) > n else "")


def _match_sources(db: sqlite3.Connection, pattern: str) -> list[DocumentRecord]:
    """Documents whose source is ``pattern``, or matches it as a glob.

    As in :meth:`Store.filter_ids`, a glob without a slash also matches file names.
    """
    exact = _documents(db, "d.source = ?", [pattern])
    if exact:
        return exact
    return _documents(db, *source_glob_sql(pattern))


def _match_patterns(
    db: sqlite3.Connection, patterns: Sequence[str]
) -> tuple[list[DocumentRecord], list[str]]:
    matched: dict[int, DocumentRecord] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        found = _match_sources(db, pattern)
        if not found and not any(c in pattern for c in "*?["):
            # A path as typed (relative, ~) is stored absolute and resolved.
            found = _match_sources(db, str(Path(pattern).expanduser().resolve()))
        if not found:
            unmatched.append(pattern)
        for d in found:
            matched.setdefault(d.id, d)
    return sorted(matched.values(), key=lambda d: d.source), unmatched


def match_documents(
    index_dir: str | Path, patterns: Sequence[str]
) -> tuple[list[DocumentRecord], list[str], int]:
    """What :func:`delete_documents` would remove now: the matching documents of the committed
    snapshot, the patterns that match nothing, and how many documents the index holds.

    Reads only; takes no lock, so a caller may ask the user before deleting.
    """
    snap = current_snapshot(Path(index_dir))
    db = sqlite3.connect(f"file:{snap / DOCSTORE}?mode=ro", uri=True)
    try:
        matched, unmatched = _match_patterns(db, patterns)
        total = int(db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
    finally:
        db.close()
    return matched, unmatched, total


def delete_documents(
    index_dir: str | Path, patterns: Sequence[str], only: Collection[str] | None = None
) -> tuple[list[DocumentRecord], list[str]]:
    """Remove the documents whose source is, or matches the glob, one of ``patterns``.

    With ``only``, matching documents whose source is not in it are kept: a caller that showed
    the user what :func:`match_documents` found removes no more than that, even if the index
    changed in between. All removals are published in one atomic commit. Returns the removed
    documents and the patterns that matched nothing.
    """
    index_dir = Path(index_dir)
    manifest = read_manifest(current_snapshot(index_dir))
    with open_writer(index_dir, manifest) as writer:
        found, unmatched = _match_patterns(writer._db, patterns)
        removed = [d for d in found if only is None or d.source in only]
        for d in removed:
            writer.delete_document(d.id)
        if removed:
            writer.commit()
    return removed, unmatched


def check_compatible(manifest: Manifest, *, embedder: str, index_dir: Path) -> None:
    """Refuse to query an index with another embedder than the one that built it."""
    if manifest.schema_version > SCHEMA_VERSION:
        raise IndexMismatch(
            f"{index_dir} was written by a newer version (schema {manifest.schema_version}); "
            "upgrade rag-toolkit."
        )
    if manifest.embedder != embedder:
        raise IndexMismatch(
            f"{index_dir} was built with embedder {manifest.embedder!r}, but the settings name "
            f"{embedder!r}. Query it with --embedder {manifest.embedder} (or RAG_EMBEDDER), "
            "or rebuild it into a new directory with the new embedder."
        )


class StoreWriter:
    """Changes to an index, published atomically by :meth:`commit`. Use :func:`open_writer`."""

    def __init__(self, index_dir: Path, manifest: Manifest, base: Path | None) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self._base = base
        self._tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=index_dir))
        self._tmp.chmod(0o755)
        db_path = self._tmp / DOCSTORE
        if base is not None:
            # The SQLite backup API copies a consistent image even if a reader holds the file.
            src = sqlite3.connect(f"file:{base / DOCSTORE}?mode=ro", uri=True)
            dst = sqlite3.connect(db_path)
            src.backup(dst)
            src.close()
            dst.close()
            self._vectors = _faiss().read_index(str(base / VECTORS))
        else:
            faiss = _faiss()
            self._vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(manifest.dimension))
        self._db = sqlite3.connect(db_path)
        self._db.execute("PRAGMA foreign_keys = ON")
        if base is not None and manifest.schema_version < 2:
            self._db.executescript(_MIGRATE_1_TO_2)
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
            self.manifest = manifest = manifest.model_copy(update={"schema_version": 2})
            self.migrated = True
        else:
            self._db.executescript(_SCHEMA)
            self.migrated = False
        self._committed = False
        reach("writer-copy-created")

    # -- reads on the working copy --
    def find_source(self, source: str) -> DocumentRecord | None:
        row = self._db.execute(
            "SELECT d.id, d.source, d.sha256, d.kind, d.pages, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.id) FROM documents d "
            "WHERE d.source = ?",
            (source,),
        ).fetchone()
        return DocumentRecord(*row) if row else None

    def counts(self) -> tuple[int, int]:
        docs = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def documents(self) -> list[DocumentRecord]:
        return _documents(self._db)

    def match_sources(self, pattern: str) -> list[DocumentRecord]:
        """Documents whose source is ``pattern``, or matches it as a glob.

        As in :meth:`Store.filter_ids`, a glob without a slash also matches file names.
        """
        return _match_sources(self._db, pattern)

    # -- changes --
    def rename_document(self, doc_id: int, new_source: str) -> None:
        """Point a document at a new source (a moved file); its chunks and vectors stay."""
        cur = self._db.execute("UPDATE documents SET source = ? WHERE id = ?", (new_source, doc_id))
        if cur.rowcount != 1:
            raise KeyError(f"no document with id {doc_id}")

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
        cur = self._db.execute(
            "INSERT INTO documents(source, sha256, kind, size, pages, title, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (source, sha256, kind, size, pages, title, _now()),
        )
        doc_id = int(cur.lastrowid or 0)
        next_id = self._next_chunk_id()
        ids = np.arange(next_id, next_id + len(chunks), dtype=np.int64)
        self._db.executemany(
            "INSERT INTO chunks(id, doc_id, seq, page, page_label, section, start, end, tokens, "
            "text, heading) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (int(cid), doc_id, seq, c.page, c.page_label, c.section, c.start, c.end,
                 c.tokens, c.text, " ".join(x for x in (title, c.section) if x) or None)
                for seq, (cid, c) in enumerate(zip(ids, chunks, strict=True))
            ],
        )  # fmt: skip
        if len(chunks):
            self._vectors.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        return doc_id

    def delete_document(self, doc_id: int) -> int:
        """Remove a document, its chunks and their vectors; returns the number of chunks removed."""
        ids = [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        if ids:
            self._vectors.remove_ids(np.asarray(ids, dtype=np.int64))
        return len(ids)

    def _next_chunk_id(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()
        # Never reuse an id that a deleted chunk had in this or an earlier snapshot.
        return max(int(row[0]), self._id_floor()) + 1

    def _id_floor(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'max_chunk_id'").fetchone()
        return int(row[0]) if row else 0

    # -- publish --
    def commit(self) -> Path:
        """Write everything, then atomically make this the index's committed snapshot."""
        top = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES ('max_chunk_id', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
            (int(top),),
        )
        self._db.commit()
        reach("commit-sqlite-committed")
        docs, chunks = self.counts()
        if chunks != self._vectors.ntotal:
            raise IndexCorrupt(
                f"Internal error: {chunks} chunks but {self._vectors.ntotal} vectors; nothing "
                "was committed."
            )
        self._db.close()
        _faiss().write_index(self._vectors, str(self._tmp / VECTORS))
        reach("commit-vectors-written")
        self.manifest = self.manifest.model_copy(
            update={
                "documents": docs,
                "chunks": chunks,
                "updated_at": _now(),
                "versions": _package_versions(),
            }
        )
        (self._tmp / MANIFEST).write_text(self.manifest.model_dump_json(indent=2) + "\n", "utf-8")
        reach("commit-manifest-written")
        for name in (VECTORS, DOCSTORE, MANIFEST):
            fsync_file(self._tmp / name)
        reach("commit-files-synced")
        snap = publish(self.index_dir, self._tmp)
        self._committed = True
        # The snapshot this write started from stays for readers that read CURRENT just before
        # it moved on; older ones (and snapshots of interrupted writes) go.
        keep = {snap.name} | ({self._base.name} if self._base is not None else set())
        remove_stale(self.index_dir, keep=keep)
        return snap

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


@contextlib.contextmanager
def open_writer(index_dir: str | Path, manifest: Manifest) -> Iterator[StoreWriter]:
    """Lock ``index_dir`` for writing and yield a writer on a copy of its committed snapshot.

    ``manifest`` describes the settings of this write; an existing index built with other
    embedding or chunking parameters is refused. Nothing is published unless the writer's
    :meth:`StoreWriter.commit` is called; an exception discards the copy.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with lock(index_dir):
        reach("lock-taken")
        committed = _committed_base(index_dir)
        base: Path | None = None
        if committed is not None:
            base, existing = committed
            _check_same_build(existing, manifest, index_dir)
            manifest = existing
        remove_stale(index_dir, keep=_keep_at_lock(index_dir, base))
        reach("lock-cleaned")
        writer = StoreWriter(index_dir, manifest, base)
        try:
            yield writer
        finally:
            if not writer._committed:
                writer.abort()


def _check_same_build(existing: Manifest, wanted: Manifest, index_dir: Path) -> None:
    fields = ("embedder", "dimension", "tokenizer", "chunk_tokens", "chunk_overlap")
    diffs = [
        f"{f}: index has {getattr(existing, f)!r}, settings say {getattr(wanted, f)!r}"
        for f in fields
        if getattr(existing, f) != getattr(wanted, f)
    ]
    if diffs:
        raise IndexMismatch(
            f"{index_dir} was built with other parameters ({'; '.join(diffs)}). Use the same "
            "settings to add to it, or ingest into a new --index directory."
        )


def _committed_base(index_dir: Path) -> tuple[Path, Manifest] | None:
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
