"""A read-only view of one committed snapshot: dense, lexical and filtered search over its
segments, chunk reads.

Each segment is searched on its own and the results are merged by score: dense scores are inner
products, the same measure in every segment; lexical scores use the idf of the whole index (see
:mod:`rag.index.lexical`). A tombstoned chunk is never returned. Opening reads no vector into RAM:
vector files and postings are memory-mapped, SQLite pages are read on demand.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorrupt
from rag.index.docstore import ChunkRecord, DocumentRecord
from rag.index.filters import Filters
from rag.index.legacy import LegacySegment
from rag.index.lexical import LexicalSegment, search_segments
from rag.index.manifest import Manifest, read_manifest
from rag.index.segment import SegmentReader
from rag.index.snapshots import current_snapshot, recovery_hint

_FILTER_CACHE_SIZE = 16  # filters whose matching rows a Store keeps (one bit per row)
_ID_BATCH = 10_000  # ids bound per statement, well below SQLite's limit of 32,766 variables


def open_segments(index_dir: Path, snapshot: Path, manifest: Manifest) -> list[SegmentReader]:
    """The segments a snapshot lists (a schema 1-2 snapshot is one segment of its own)."""
    if not manifest.segmented:
        return [LegacySegment(snapshot, manifest)]
    opened: list[SegmentReader] = []
    try:
        for info in manifest.segments:
            opened.append(SegmentReader(index_dir, info, manifest.dimension))
    except BaseException:
        for seg in opened:
            seg.close()
        raise
    return opened


class _Allowed:
    """What a filter allows in one segment: a row mask and its count; for a source or kind
    filter also, for the postings, the documents it allows or, when that is the shorter list,
    those it rules out (tombstoned ones included)."""

    def __init__(
        self,
        mask: np.ndarray | None,
        count: int,
        documents: list[int] | None = None,
        excluded: list[int] | None = None,
    ) -> None:
        self.mask, self.count = mask, count
        self.documents, self.excluded = documents, excluded


class Store:
    """A read-only view of one committed snapshot."""

    def __init__(
        self, index_dir: Path, snapshot: Path, manifest: Manifest, segments: list[SegmentReader]
    ) -> None:
        self.index_dir = index_dir
        self.snapshot = snapshot
        self.manifest = manifest
        self.segments = segments
        self._filter_cache: OrderedDict[tuple[Any, ...], list[_Allowed]] = OrderedDict()
        self._filter_lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: str | Path) -> Store:
        index_dir = Path(index_dir)
        # CURRENT may move on (and a writer remove what it named) between reading it and
        # opening the files; try up to three times.
        for attempt in range(3):
            snap = current_snapshot(index_dir)
            try:
                manifest = read_manifest(snap)
                return cls(index_dir, snap, manifest, open_segments(index_dir, snap, manifest))
            except (RuntimeError, OSError, ValueError, sqlite3.Error, IndexCorrupt) as exc:
                if attempt == 2 or snap == current_snapshot(index_dir):
                    raise IndexCorrupt(
                        f"Cannot open the index in {snap}: {exc}. {recovery_hint(index_dir)}"
                    ) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release every segment's files, memory maps and threads now, not when the Store is
        collected (``rag serve`` opens a Store per snapshot it serves)."""
        for seg in self.segments:
            seg.close()
        with self._filter_lock:
            self._filter_cache.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ntotal(self) -> int:
        """The number of live chunks."""
        return (
            sum(s.info.live_chunks for s in self.segments)
            if self.manifest.segmented
            else (len(self.segments[0].ids))
        )

    # -- dense --
    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest chunk ids by inner product, best first."""
        return self.search_filtered(query, k, None)

    def search_filtered(
        self, query: np.ndarray, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """Like :meth:`search`, restricted to the chunks that match ``filters``.

        The rows a filter allows are read once per filter and segment and kept as a mask: the
        segments of a snapshot are immutable, so it cannot go stale. An approximate segment
        searches only the allowed rows (a FAISS selector), with more lists probed for a
        selective filter and an exact scan of the allowed rows below 1% of the segment.
        """
        if k <= 0:
            return []
        allowed = self._allowed(filters)
        found: list[tuple[int, float]] = []
        for seg, a in zip(self.segments, allowed, strict=True):
            if a.count == 0:
                continue
            for pos, score in seg.vectors.search(query, k, a.mask, a.count):
                found.append((int(seg.ids[pos]), score))
        found.sort(key=lambda h: (-h[1], h[0]))
        return found[:k]

    def _allowed(self, filters: Filters | None) -> list[_Allowed]:
        """Per segment, the rows that are live and match ``filters``; cached per filter."""
        key = filters.key() if filters is not None and not filters.is_empty() else ()
        with self._filter_lock:
            hit = self._filter_cache.get(key)
            if hit is not None:
                self._filter_cache.move_to_end(key)
                return hit
        entry = [self._allowed_in(seg, filters if key else None) for seg in self.segments]
        with self._filter_lock:
            self._filter_cache[key] = entry
            while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        return entry

    @staticmethod
    def _allowed_in(seg: SegmentReader, filters: Filters | None) -> _Allowed:
        live = seg.live
        if filters is None:
            count = len(seg.ids) if live is None else int(live.sum())
            return _Allowed(live, count, None)
        where, args = filters.sql()
        ids = np.fromiter(
            (r[0] for r in seg.db.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE " + where,
                args,
            )),
            dtype=np.int64,
        )  # fmt: skip
        mask = np.zeros(len(seg.ids), dtype=bool)
        mask[seg.positions(ids)] = True
        if live is not None:
            mask &= live
        if not (filters.source_glob or filters.kinds):
            return _Allowed(mask, int(mask.sum()))
        doc_where, doc_args = Filters(source_glob=filters.source_glob, kinds=filters.kinds).sql()
        every = [int(r[0]) for r in seg.db.execute("SELECT id FROM documents")]
        chosen = {int(r[0]) for r in seg.db.execute(
            "SELECT d.id FROM documents d WHERE " + doc_where, doc_args
        )} - seg.deleted  # fmt: skip
        if 2 * len(chosen) <= len(every):
            return _Allowed(mask, int(mask.sum()), documents=sorted(chosen))
        return _Allowed(mask, int(mask.sum()), excluded=[d for d in every if d not in chosen])

    # -- lexical --
    def lexical_search(
        self, text: str, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` best chunks by BM25 (tantivy, English stemming), best first, higher better.

        ``filters`` restrict each segment's query to the documents they allow (and the page
        range), so a filter costs a lookup per allowed document, whatever the number of chunks.
        """
        if k <= 0:
            return []
        if not self.manifest.segmented:
            legacy = self.segments[0]
            assert isinstance(legacy, LegacySegment)
            where, args = filters.sql() if filters is not None else ("", [])
            return legacy.fts_search(text, k, where, args)
        # Documents are what a source or kind filter allows (tombstoned ones never are); a
        # page range alone keeps every live document.
        by_document = filters is not None and bool(filters.source_glob or filters.kinds)
        allowed = self._allowed(filters) if by_document else None
        pages = filters.pages if filters is not None and filters.pages else None
        parts: list[tuple[LexicalSegment, dict[str, Any]]] = []
        for i, seg in enumerate(self.segments):
            kwargs: dict[str, Any] = {"pages": pages}
            if allowed is not None and allowed[i].documents is not None:
                kwargs["documents"] = allowed[i].documents
            elif allowed is not None:
                kwargs["deleted"] = allowed[i].excluded
            else:
                kwargs["deleted"] = seg.deleted_sorted
            parts.append((seg.lexical, kwargs))
        return search_segments(parts, text, k)

    # -- reads --
    def filter_ids(
        self,
        *,
        source_glob: str | None = None,
        kinds: Sequence[str] | None = None,
        pages: tuple[int, int] | None = None,
    ) -> list[int]:
        """Ids of the live chunks that match every given filter, ascending.

        ``source_glob`` matches the whole source path, or its file name when the pattern holds no
        slash (``*.pdf``, ``report-2023*``). ``pages`` is an inclusive 1-based range; chunks without
        a page (text files) never match a page range.
        """
        f = Filters(source_glob=source_glob, kinds=tuple(kinds) if kinds else None, pages=pages)
        out: list[int] = []
        for seg, a in zip(self.segments, self._allowed(f), strict=True):
            mask = a.mask if a.mask is not None else np.ones(len(seg.ids), dtype=bool)
            out += [int(i) for i in np.asarray(seg.ids)[mask]]
        return sorted(out)

    def _route(self, ids: Sequence[int]) -> list[tuple[SegmentReader, np.ndarray]]:
        """The segments that hold ``ids``, with the ids each holds."""
        want = np.asarray([int(i) for i in ids], dtype=np.int64)
        out = []
        for seg in self.segments:
            if not len(want):
                break
            held = seg.holds(want)
            if held.any():
                out.append((seg, want[held]))
                want = want[~held]
        return out

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of chunks, in the order given."""
        out = np.zeros((len(ids), self.manifest.dimension), dtype=np.float32)
        where = {int(i): n for n, i in enumerate(ids)}
        for seg, held in self._route(ids):
            rows = seg.vectors.rows(seg.positions(held))
            for i, row in zip(held, rows, strict=True):
                out[where[int(i)]] = row
        return out

    def chunks(self, ids: Sequence[int]) -> list[ChunkRecord]:
        """Chunks by id, in the order given (unknown and deleted ids are left out)."""
        by_id: dict[int, ChunkRecord] = {}
        for seg, held in self._route(ids):
            batch_ids = [int(i) for i in held]
            # In batches: SQLite binds at most 32,766 variables per statement.
            for lo in range(0, len(batch_ids), _ID_BATCH):
                batch = batch_ids[lo : lo + _ID_BATCH]
                rows = seg.db.execute(
                    "SELECT c.id, d.source, c.page, c.page_label, c.section, c.start, c.end, "
                    "c.text, c.doc_id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                    f"WHERE c.id IN ({','.join('?' * len(batch))})",
                    batch,
                )
                by_id.update((r[0], ChunkRecord(*r[:8])) for r in rows if r[8] not in seg.deleted)
        return [by_id[int(i)] for i in ids if int(i) in by_id]

    def documents(self) -> list[DocumentRecord]:
        """The live documents, by source."""
        docs = [d for seg in self.segments for d in seg.documents()]
        return sorted(docs, key=lambda d: d.source)

    def counts(self) -> tuple[int, int]:
        """(documents, chunks), live ones only."""
        if self.manifest.segmented:
            return self.manifest.documents, self.manifest.chunks
        db = self.segments[0].db
        docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)
