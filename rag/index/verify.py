"""Checks that a snapshot is sound: every segment's rows, ids, vectors and postings agree with each
other and with the manifest; and the recall of approximate segments against exact search."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import IndexCorrupt
from rag.index.legacy import LegacySegment
from rag.index.manifest import DOCSTORE, MANIFEST, VECTORS, Manifest, SegmentInfo, read_manifest
from rag.index.reader import Store
from rag.index.segment import IDS, ROWS, SEGMENTS, SegmentReader
from rag.index.snapshots import current_snapshot
from rag.index.vectors import (
    exact_top,
    faiss_module,
    held_out_rows,
    ivf_nlist,
    recall_at_k,
)


def verify(index_dir: str | Path) -> list[str]:
    """Problems found in the committed snapshot of ``index_dir``; an empty list when it is sound.

    Checks that CURRENT names a snapshot and, in every segment it lists, that SQLite is intact,
    that every chunk has exactly one vector and one posting entry, that the tombstones name
    documents of the segment, and that the manifest's counts and dimension match. Raises
    :class:`IndexNotFound` when there is no index at all. A damaged CURRENT is reported with the
    snapshots on disk and the recovery command.
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
    if not manifest.segmented:
        return _verify_legacy(snap, manifest)
    problems: list[str] = []
    for info in manifest.segments:
        problems += [f"{info.name}: {p}" for p in _verify_segment(snap.parent, info, manifest)]
    docs = sum(i.documents - len(i.deleted_documents) for i in manifest.segments)
    chunks = sum(i.live_chunks for i in manifest.segments)
    if (manifest.documents, manifest.chunks) != (docs, chunks):
        problems.append(
            f"{MANIFEST} records {manifest.documents} documents and {manifest.chunks} chunks, "
            f"its segments hold {docs} and {chunks}"
        )
    return problems


def _verify_segment(index_dir: Path, info: SegmentInfo, manifest: Manifest) -> list[str]:
    where = index_dir / SEGMENTS / info.name
    try:
        seg = SegmentReader(index_dir, info, manifest.dimension)
    except (OSError, ValueError, RuntimeError, sqlite3.Error) as exc:
        return [f"cannot open {where}: {exc}"]
    problems: list[str] = []
    try:
        db = seg.db
        quick = [r[0] for r in db.execute("PRAGMA quick_check")]
        if quick != ["ok"]:
            problems.append(f"{ROWS}: SQLite integrity check failed: {'; '.join(quick[:5])}")
        docs = int(db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        chunk_ids = np.fromiter((r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")),
                                dtype=np.int64)  # fmt: skip
        orphans = db.execute(
            "SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunk(s) belong to no document")
        if (docs, len(chunk_ids)) != (info.documents, info.chunks):
            problems.append(
                f"holds {docs} documents and {len(chunk_ids)} chunks, the manifest says "
                f"{info.documents} and {info.chunks}"
            )
        ids = np.asarray(seg.ids)
        if len(ids) != len(chunk_ids) or not np.array_equal(ids, chunk_ids):
            missing = np.setdiff1d(chunk_ids, ids)
            extra = np.setdiff1d(ids, chunk_ids)
            problems.append(
                f"{IDS} disagrees with the chunks: {len(missing)} chunk(s) without a vector "
                f"(ids {_some(missing.tolist())}), {len(extra)} vector(s) without a chunk "
                f"(ids {_some(extra.tolist())})"
            )
        if seg.vectors.count != len(ids):
            problems.append(f"{seg.vectors.count} vectors for {len(ids)} ids")
        if seg.lexical is not None and seg.lexical.docs != len(chunk_ids):
            problems.append(
                f"the postings hold {seg.lexical.docs} chunks, the rows {len(chunk_ids)}"
            )
        unknown = [
            d for d in info.deleted_documents
            if not db.execute("SELECT 1 FROM documents WHERE id = ?", (d,)).fetchone()
        ]  # fmt: skip
        if unknown:
            problems.append(f"tombstones name unknown documents {_some(unknown)}")
        deleted = len(seg.chunk_ids_of(info.deleted_documents))
        if deleted != info.deleted_chunks:
            problems.append(
                f"its tombstoned documents hold {deleted} chunks, the manifest says "
                f"{info.deleted_chunks}"
            )
        kind = "ivf_flat" if seg.vectors.approximate else "flat"
        if kind != info.vectors.kind:
            problems.append(f"vectors are {kind}, the manifest says {info.vectors.kind}")
    except sqlite3.Error as exc:
        problems.append(f"cannot read {where / ROWS}: {exc}")
    finally:
        seg.close()
    return problems


def _verify_legacy(snap: Path, manifest: Manifest) -> list[str]:
    """A snapshot of schema 1-2: vectors.faiss and docstore.sqlite with its FTS5 index."""
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
        try:
            db.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.Error as exc:
            problems.append(f"full-text index (chunks_fts) disagrees with the chunks: {exc}")
    except sqlite3.Error as exc:
        return [f"Cannot read {snap / DOCSTORE}: {exc}"]
    finally:
        db.close()
    if int(vectors.ntotal) != chunks:
        problems.append(f"{VECTORS} holds {vectors.ntotal} vectors but {DOCSTORE} {chunks} chunks")
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


@dataclass(frozen=True)
class SegmentRecall:
    """recall@k of one approximate segment: its answers against an exact scan of its rows."""

    segment: str
    chunks: int
    nlist: int
    nprobe: int
    queries: int
    recall: float
    questions: str = "stored"  # held-out stored rows (see measure_recall), or "given"


def measure_recall(
    index_dir: str | Path,
    queries: int = 200,
    k: int = 10,
    seed: int = 0,
    questions: np.ndarray | None = None,
) -> list[SegmentRecall]:
    """recall@``k`` of each approximate segment against exact search over the same rows.

    ``questions``: embedded questions (one row each, from the index's embedder), asked of every
    segment. Without them, up to ``queries`` stored rows per segment that did not train its
    centroids are asked, each left out of its own answers
    (:func:`rag.index.vectors.held_out_rows`): they measure the recall of questions that lie
    among the stored vectors, where real questions may lie further away and get less. Exact
    segments are exact by construction and are left out (an index without approximate
    segments gives [])."""
    out: list[SegmentRecall] = []
    with Store.open(index_dir) as store:
        for seg in store.segments:
            if isinstance(seg, LegacySegment) or not seg.vectors.approximate:
                continue
            n = seg.vectors.count
            own: np.ndarray | None = None
            if questions is None:
                nlist = seg.info.vectors.nlist or ivf_nlist(n)
                own = held_out_rows(n, nlist, queries, seed=seed)
                qs = seg.vectors.rows(own)
            else:
                qs = np.ascontiguousarray(questions, dtype=np.float32).reshape(
                    -1, seg.vectors.dimension
                )
            truth, _ = exact_top(qs, seg.vectors.all_rows(), k, exclude=own)
            extra = 0 if own is None else 1  # the own row, found and then left out
            answers = [seg.vectors.search(q, k + extra, None, n) for q in qs]
            out.append(
                SegmentRecall(
                    segment=seg.info.name,
                    chunks=n,
                    nlist=seg.info.vectors.nlist,
                    nprobe=seg.vectors.nprobe,
                    queries=len(qs),
                    recall=recall_at_k(answers, truth, exclude=own),
                    questions="stored" if own is not None else "given",
                )
            )
    return out


def _some(ids: Sequence[int], n: int = 5) -> str:
    return ", ".join(map(str, ids[:n])) + (", ..." if len(ids) > n else "")
