"""Run a sentence-transformers encoder under ONNX Runtime: same weights, faster on CPUs.

The transformer is exported once with ``torch.onnx.export`` into the cache; pooling and
normalisation are done here exactly as sentence-transformers does them. Only the common shape
Transformer -> Pooling(mean or cls) -> [Normalize] is exported; anything else stays on torch.
Embeddings agree with the torch ones to a cosine of 0.99999 or better (checked in the tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_EXPORT_VERSION = "1"
# Texts per ONNX Runtime call. Measured on a 2-core CPU with all-MiniLM-L6-v2 and 200-token
# chunks: 8 is faster than 16 or 32 (activations stay in cache) and peaks at 60% of the memory.
MAX_RUN_BATCH = 8
SPINNING = "session.intra_op.allow_spinning"  # ONNX Runtime session option


def supported(model: Any) -> bool:
    """Whether ``model`` (a SentenceTransformer) has the exportable shape."""
    names = [type(m).__name__ for m in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    return _pooling_mode(model) in ("mean", "cls")


def _pooling_mode(model: Any) -> str:
    config = model[1].get_config_dict()
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return mode
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    return "unsupported"


class OnnxEncoder:
    """``encode`` like SentenceTransformer.encode, for the supported shape."""

    def __init__(self, model: Any, cache_dir: Path, source: str) -> None:
        import onnxruntime as ort

        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.pooling = _pooling_mode(model)
        # The toolkit always works with unit vectors (inner product = cosine).
        self.normalize = True
        path = _export(model, cache_dir, source)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's worker threads otherwise spin on a core after each run. On 2 cores
        # shared with other work, a question's embedding took 13 ms instead of 7 and the search
        # after it 12 ms instead of 4.6 (SQLite FTS5, 10k chunks); batch embedding was no slower.
        # On idle cores spinning saves about 0.5 ms of a question's embedding, no more.
        options.add_session_config_entry(SPINNING, "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        batch_size = max(1, min(batch_size, MAX_RUN_BATCH))
        # Longest first, so that each batch pads to similar lengths (as sentence-transformers does).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            batch = self.tokenizer(
                [texts[j] for j in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            feed = {k: batch[k].astype(np.int64) for k in self.inputs if k in batch}
            if "token_type_ids" in self.inputs and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            hidden = self.session.run(None, feed)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            if self.pooling == "mean":
                vecs = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            else:
                vecs = hidden[:, 0]
            if self.normalize:
                vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
        assert out is not None
        return out


def _export(model: Any, cache_dir: Path, source: str) -> Path:
    key = hashlib.sha256(f"{_EXPORT_VERSION}|{_fingerprint(source)}".encode()).hexdigest()[:16]
    target = Path(cache_dir) / "onnx" / f"{Path(source).name}-{key}" / "model.onnx"
    if target.is_file():
        return target
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    transformer = model[0].auto_model
    tok = model.tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok]

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    log.info("Exporting %s to ONNX (once): %s", source, target)
    # The tracer warns that shape checks become constants; for a bidirectional encoder they are.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Wrapper(transformer).eval(),
            tuple(tok[n] for n in names),
            tmp,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)
    return target


def _fingerprint(source: str) -> str:
    """Identify the model's weights: its path plus the sizes and times of its files."""
    path = Path(source)
    if not path.is_dir():
        return source
    parts = [str(path.resolve())]
    for f in sorted(path.rglob("*")):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)
