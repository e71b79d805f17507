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

from rag.answer import Citation
from rag.embeddings import Embedder
from rag.fusion import convex_fusion
from rag.store import ChunkRecord, Store

RetrievalMode = Literal["dense", "lexical", "hybrid"]


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def to_document(record: ChunkRecord, score: float, dense_score: float | None = None) -> Document:
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
            "dense_score": dense_score,
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
        dense_score=_finite(md.get("dense_score")),
        chunk_id=int(md["chunk_id"]),
    )


@dataclass(frozen=True)
class Filters:
    """Restrict retrieval to some chunks; every given filter must match."""

    source_glob: str | None = None  # on the path, or the file name when it holds no "/"
    kinds: tuple[str, ...] | None = None  # "pdf", "docx", "html", "text", "markdown"
    pages: tuple[int, int] | None = None  # inclusive, 1-based

    def is_empty(self) -> bool:
        return not (self.source_glob or self.kinds or self.pages)


class Retriever(BaseRetriever):
    """Dense (FAISS), lexical (BM25, SQLite FTS5) or hybrid retrieval, with filters and MMR.

    Scores in the returned documents' metadata: ``score`` is the mode's own (cosine for dense,
    BM25 for lexical, the fused score for hybrid, the cross-encoder's when reranking); ``dense_score`` is the cosine similarity to the
    question whatever the mode, which is what abstention thresholds compare.
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
        return [to_document(r, s, d) for r, s, d in self.search(query, k)]

    def search(self, query: str, k: int) -> list[tuple[ChunkRecord, float, float]]:
        """(chunk, score, dense cosine) for the ``k`` best chunks, best first."""
        store: Store = self.store
        embedder: Embedder = self.embedder
        allowed = None
        if self.filters is not None and not self.filters.is_empty():
            f = self.filters
            allowed = store.filter_ids(source_glob=f.source_glob, kinds=f.kinds, pages=f.pages)
        fetch = max(self.fetch_k, k * (4 if self.mmr else 1))
        # The question vector is needed in every mode: the dense cosine drives abstention.
        qvec = embedder.embed_query(query)
        if self.mode == "dense":
            ranked = store.search_ids(qvec, fetch, allowed)
        elif self.mode == "lexical":
            ranked = store.lexical_search(query, fetch, allowed)
        else:
            dense = store.search_ids(qvec, fetch, allowed)
            lexical = store.lexical_search(query, fetch, allowed)
            ranked = convex_fusion(dense, lexical, self.hybrid_alpha)
        if not ranked:
            return []
        ids = [i for i, _ in ranked]
        scores = dict(ranked)
        if self.reranker is not None:
            ids = ids[: max(self.rerank_candidates, k)]
            texts = {r.id: r.text for r in store.chunks(ids)}
            reranked = self.reranker.scores(query, [texts[i] for i in ids])
            order = sorted(zip(ids, reranked, strict=True), key=lambda x: -x[1])
            ids = [i for i, _ in order]
            scores = dict(order)
        ids = _mmr(store, qvec, ids, k, self.mmr_lambda) if self.mmr else ids[:k]
        records = store.chunks(ids)
        # Cosines of the returned passages only: reconstructing every candidate would cost
        # fetch_k vector reads per question for nothing.
        cosines = dict(zip(ids, (store.vectors(ids) @ qvec).tolist(), strict=True))
        return [(r, scores[r.id], cosines[r.id]) for r in records]


def _mmr(store: Store, qvec: np.ndarray, ids: list[int], k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: relevant to the question, unlike passages already chosen."""
    vecs = store.vectors(ids)
    relevance = vecs @ qvec
    chosen: list[int] = []
    rest = list(range(len(ids)))
    while rest and len(chosen) < k:
        similarity = (vecs[rest] @ vecs[chosen].T).max(axis=1) if chosen else np.zeros(len(rest))
        gain = lam * relevance[rest] - (1 - lam) * similarity
        best = rest[int(np.argmax(gain))]
        chosen.append(best)
        rest.remove(best)
    return [ids[i] for i in chosen]
