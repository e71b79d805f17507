"""Optional cross-encoder reranking of retrieved passages (sentence-transformers CrossEncoder).

Off by default. A cross-encoder reads question and passage together, which ranks better than
comparing separate embeddings but costs one forward pass per candidate, so it only reorders the
best ``rerank_candidates`` passages of the first stage.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from rag.errors import ModelUnavailable


class Reranker:
    def __init__(self, model_name: str, device: str | None = None) -> None:
        self.model_name = model_name
        self.device = device or "cpu"
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(self.model_name, device=self.device)
            except Exception as exc:
                raise ModelUnavailable(
                    f"Cannot load the reranker {self.model_name!r}: {exc}. Name a local "
                    "cross-encoder directory, or unset 'reranker'."
                ) from exc
        return self._model

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            raw = self.model.predict([(question, p) for p in passages], show_progress_bar=False)
        return [float(x) for x in raw]


@lru_cache(maxsize=4)
def load_reranker(model_name: str, device: str | None = None) -> Reranker:
    return Reranker(model_name, device)
