"""What an index holds and how it was built, as plain data (``rag info --json``, ``GET /v1/index``)."""

from __future__ import annotations

from typing import Any

from rag.index.reader import Store


def describe(store: Store, index: str, *, sources: bool = True) -> dict[str, Any]:
    """The committed snapshot of ``store``: counts, the manifest's build parameters, its
    segments and, with ``sources``, every document. ``index`` is how the index is named."""
    m = store.manifest
    docs, chunks = store.counts()
    data: dict[str, Any] = {
        "index": index,
        "snapshot": store.snapshot.name,
        "documents": docs,
        "chunks": chunks,
        "embedder": m.embedder,
        "dimension": m.dimension,
        "index_type": m.index_type,
        "tokenizer": m.tokenizer,
        "chunk_tokens": m.chunk_tokens,
        "chunk_overlap": m.chunk_overlap,
        "schema_version": m.schema_version,
        "segments": [
            {
                "name": i.name,
                "chunks": i.live_chunks,
                "deleted_chunks": i.deleted_chunks,
                "vectors": i.vectors.kind,
            }
            for i in m.segments
        ],
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }
    if sources:
        data["sources"] = [
            {"source": d.source, "kind": d.kind, "pages": d.pages, "chunks": d.chunks}
            for d in store.documents()
        ]
    return data
