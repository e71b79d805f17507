"""Changes to an index, written to a private copy and published atomically by one rename.

A writer copies the committed snapshot aside, changes the copy and publishes it by replacing
CURRENT (see :mod:`rag.index.snapshots` for publishing, the lock and clean-up). Readers open
whatever CURRENT names, so they see the old or the new index, never a mix, and a crash at any
moment leaves the last committed snapshot intact.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rag.errors import IndexCorrupt
from rag.index.crashpoints import reach
from rag.index.docstore import (
    MIGRATE_1_TO_2,
    SCHEMA_SQL,
    DocumentRecord,
    NewChunk,
    list_documents,
    match_patterns,
)
from rag.index.manifest import (
    DOCSTORE,
    MANIFEST,
    VECTORS,
    Manifest,
    check_same_build,
    now,
    package_versions,
    read_manifest,
)
from rag.index.snapshots import (
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
from rag.index.vectors import faiss_module


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
            self._vectors = faiss_module().read_index(str(base / VECTORS))
        else:
            faiss = faiss_module()
            self._vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(manifest.dimension))
        self._db = sqlite3.connect(db_path)
        self._db.execute("PRAGMA foreign_keys = ON")
        if base is not None and manifest.schema_version < 2:
            self._db.executescript(MIGRATE_1_TO_2)
            self._db.executescript(SCHEMA_SQL)
            self._db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
            self.manifest = manifest = manifest.model_copy(update={"schema_version": 2})
            self.migrated = True
        else:
            self._db.executescript(SCHEMA_SQL)
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
        return list_documents(self._db)

    def match_patterns(self, patterns: Sequence[str]) -> tuple[list[DocumentRecord], list[str]]:
        """Documents whose source is, or matches the glob, one of ``patterns`` (see
        :func:`rag.index.docstore.match_patterns`), and the patterns that match nothing."""
        return match_patterns(self._db, patterns)

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
            (source, sha256, kind, size, pages, title, now()),
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
        faiss_module().write_index(self._vectors, str(self._tmp / VECTORS))
        reach("commit-vectors-written")
        self.manifest = self.manifest.model_copy(
            update={
                "documents": docs,
                "chunks": chunks,
                "updated_at": now(),
                "versions": package_versions(),
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
            check_same_build(existing, manifest, index_dir)
            manifest = existing
        remove_stale(index_dir, keep=_keep_at_lock(index_dir, base))
        reach("lock-cleaned")
        writer = StoreWriter(index_dir, manifest, base)
        try:
            yield writer
        finally:
            if not writer._committed:
                writer.abort()


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
