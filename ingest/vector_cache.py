"""Embedding identical chunk texts once: a bounded cache of the most recent vectors, so that
memory does not grow with the corpus."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from rag.retrieval.embeddings import Embedder


class VectorCache:
    """Vectors of the most recently embedded chunk texts, by digest: a duplicated file, or a page
    repeated across files, is embedded once while its texts are among the last ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def get(self, key: bytes) -> np.ndarray | None:
        v = self._vectors.get(key)
        if v is not None:
            self._vectors.move_to_end(key)
        return v

    def put(self, key: bytes, vector: np.ndarray) -> None:
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)


def embed_missing(
    embedder: Embedder, texts: list[str], cache: VectorCache, batch_size: int
) -> dict[bytes, np.ndarray]:
    """The vectors of ``texts`` by digest: from ``cache``, else embedded (each distinct text
    once); the embedded ones go into ``cache``."""
    found: dict[bytes, np.ndarray] = {}
    todo: dict[bytes, str] = {}
    for t in texts:
        k = text_key(t)
        if k in found or k in todo:
            continue
        v = cache.get(k)
        if v is None:
            todo[k] = t
        else:
            found[k] = v
    if todo:
        vectors = embedder.embed(list(todo.values()), batch_size=batch_size)
        for k, v in zip(todo, vectors, strict=True):
            found[k] = v
            cache.put(k, v)
    return found


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
