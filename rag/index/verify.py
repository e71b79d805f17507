"""Checks that a snapshot is sound: vectors, chunks, the full-text index and the manifest agree."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from rag.errors import IndexCorrupt
from rag.index.manifest import DOCSTORE, MANIFEST, VECTORS, read_manifest
from rag.index.snapshots import current_snapshot
from rag.index.vectors import faiss_module


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
        vectors = faiss_module().read_index(str(snap / VECTORS))
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
        vector_ids = {int(i) for i in faiss_module().vector_to_array(vectors.id_map)}
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
