"""Retrieval over the index as a LangChain retriever: dense, lexical (BM25) or hybrid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from rag.answer import Citation, SourceRef
from rag.index.docstore import ChunkRecord
from rag.index.filters import Filters
from rag.index.reader import Store
from rag.retrieval.embeddings import Embedder
from rag.retrieval.fusion import convex_fusion, minmax

__all__ = ["Filters", "Hit", "RetrievalMode", "Retriever", "to_citation", "to_document"]

RetrievalMode = Literal["dense", "lexical", "hybrid"]
Place = tuple[str, int | None]  # (source, page)


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


@dataclass(frozen=True)
class Hit:
    """One retrieved passage: its chunk, the mode's score, its cosine similarity to the question,
    and the other places that hold the same text (copies collapsed into this passage)."""

    record: ChunkRecord
    score: float
    similarity: float
    also_in: tuple[Place, ...] = ()


def to_document(
    record: ChunkRecord,
    score: float,
    similarity: float | None = None,
    also_in: tuple[Place, ...] = (),
) -> Document:
    return Document(
        page_content=record.text,
        id=str(record.id),
        metadata={
            "chunk_id": record.id,
            "source": record.source,
            "page": record.page,
            "page_label": record.page_label,
            "section": record.section,
            "start": record.start,
            "end": record.end,
            "score": score,
            "similarity": similarity,
            "also_in": [{"source": s, "page": p} for s, p in also_in],
        },
    )


def to_citation(doc: Document, n: int) -> Citation:
    md = doc.metadata
    return Citation(
        n=n,
        source=md["source"],
        page=md.get("page"),
        page_label=md.get("page_label"),
        section=md.get("section"),
        start=md["start"],
        end=md["end"],
        text=doc.page_content,
        score=float(md["score"]),
        similarity=_finite(md.get("similarity")),
        chunk_id=int(md["chunk_id"]),
        also_in=[SourceRef(**x) for x in md.get("also_in") or ()],
    )


class Retriever(BaseRetriever):
    """Dense (FAISS), lexical (BM25, SQLite FTS5) or hybrid retrieval, with filters and MMR.

    Scores in the returned documents' metadata: ``score`` is what ranked the passage (the cosine
    for dense, BM25 for lexical, the fused score for hybrid, the cross-encoder's when reranking);
    ``similarity`` is the cosine similarity to the question whatever the mode, which is what
    abstention thresholds compare. Passages with the
    same text (whitespace aside) are returned once, listing the other copies in ``also_in``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any = Field(exclude=True)
    embedder: Any = Field(exclude=True)
    k: int = 4
    mode: RetrievalMode = "hybrid"
    fetch_k: int = 50
    hybrid_alpha: float = 0.5
    mmr: bool = False
    mmr_lambda: float = 0.5
    filters: Filters | None = None
    reranker: Any = Field(None, exclude=True)
    rerank_candidates: int = 20

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = int(kwargs.get("k", self.k))
        return [
            to_document(h.record, h.score, h.similarity, h.also_in) for h in self.hits(query, k)
        ]

    def search(self, query: str, k: int) -> list[tuple[ChunkRecord, float, float]]:
        """(chunk, score, cosine similarity) for the ``k`` best chunks, best first."""
        return [(h.record, h.score, h.similarity) for h in self.hits(query, k)]

    def hits(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best distinct passages, best first."""
        store: Store = self.store
        embedder: Embedder = self.embedder
        filters = self.filters if self.filters is not None and not self.filters.is_empty() else None
        # The question vector is needed in every mode: the cosine similarity drives abstention.
        qvec = embedder.embed_query(query)
        fetch = max(self.fetch_k, k * (4 if self.mmr else 1))
        while True:
            ranked, exhausted = self._rank(query, qvec, fetch, filters)
            records, copies = _collapse(store.chunks([i for i, _ in ranked]))
            # Copies free places in the ranking; search deeper until the next distinct passages
            # fill them, or there are no more candidates.
            if len(records) >= k or exhausted:
                break
            fetch *= 2
        if not records:
            return []
        ids = [r.id for r in records]
        scores = dict(ranked)
        if self.reranker is not None:
            ids = ids[: max(self.rerank_candidates, k)]
            texts = {r.id: r.text for r in records}
            reranked = self.reranker.scores(query, [texts[i] for i in ids])
            order = sorted(zip(ids, reranked, strict=True), key=lambda x: -x[1])
            ids = [i for i, _ in order]
            scores = dict(order)
        ids = _mmr(store, ids, scores, k, self.mmr_lambda) if self.mmr else ids[:k]
        by_id = {r.id: r for r in records}
        # Cosines of the returned passages only: reconstructing every candidate would cost
        # fetch_k vector reads per question for nothing.
        cosines = (store.vectors(ids) @ qvec).tolist()
        return [
            Hit(by_id[i], scores[i], c, tuple(copies.get(i, ())))
            for i, c in zip(ids, cosines, strict=True)
        ]

    def _rank(
        self, query: str, qvec: np.ndarray, fetch: int, filters: Filters | None
    ) -> tuple[list[tuple[int, float]], bool]:
        """Candidate (id, score) best first, and whether the index holds no further candidate."""
        store: Store = self.store
        if self.mode == "dense":
            ranked = store.search_filtered(qvec, fetch, filters)
            return ranked, len(ranked) < fetch
        lexical = store.lexical_search(query, fetch, filters)
        if self.mode == "lexical":
            return lexical, len(lexical) < fetch
        dense = store.search_filtered(qvec, fetch, filters)
        fused = convex_fusion(dense, lexical, self.hybrid_alpha)
        return fused, len(dense) < fetch and len(lexical) < fetch


def _collapse(records: list[ChunkRecord]) -> tuple[list[ChunkRecord], dict[int, list[Place]]]:
    """Keep the best-ranked chunk of each text; the places of its copies, by kept chunk id.

    Texts are compared with whitespace normalised, so that copies of a file with other line
    endings (CRLF, LF) or re-wrapped lines count as the same passage.
    """
    kept: dict[str, ChunkRecord] = {}
    copies: dict[int, list[Place]] = {}
    for r in records:
        first = kept.setdefault(" ".join(r.text.split()), r)
        if first is r:
            continue
        places = copies.setdefault(first.id, [])
        place = (r.source, r.page)
        if place != (first.source, first.page) and place not in places:
            places.append(place)
    return list(kept.values()), copies


def _mmr(store: Store, ids: list[int], scores: dict[int, float], k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: relevant to the question, unlike passages already chosen.

    Relevance is the mode's own score (cosine, BM25, fused or the reranker's), min-max normalised
    over the candidates, so that MMR refines the order the mode produced instead of replacing it
    with the dense one; diversity is the cosine between passage vectors.
    """
    vecs = store.vectors(ids)
    norm = minmax([(i, scores[i]) for i in ids])
    relevance = np.array([norm[i] for i in ids])
    chosen: list[int] = []
    rest = list(range(len(ids)))
    while rest and len(chosen) < k:
        similarity = (vecs[rest] @ vecs[chosen].T).max(axis=1) if chosen else np.zeros(len(rest))
        gain = lam * relevance[rest] - (1 - lam) * similarity
        best = rest[int(np.argmax(gain))]
        chosen.append(best)
        rest.remove(best)
    return [ids[i] for i in chosen]
