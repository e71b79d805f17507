"""Dense retrieval over the index as a LangChain retriever."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from rag.answer import Citation
from rag.embeddings import Embedder
from rag.store import ChunkRecord, Store


def to_document(record: ChunkRecord, score: float) -> Document:
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
        chunk_id=int(md["chunk_id"]),
    )


class DenseRetriever(BaseRetriever):
    """Nearest chunks by cosine similarity of sentence-transformers embeddings (FAISS)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any = Field(exclude=True)
    embedder: Any = Field(exclude=True)
    k: int = 4

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        store: Store = self.store
        embedder: Embedder = self.embedder
        k = int(kwargs.get("k", self.k))
        hits = store.search(embedder.embed_query(query), k)
        records = store.chunks([i for i, _ in hits])
        scores = dict(hits)
        return [to_document(r, scores[r.id]) for r in records]
