"""Run a sentence-transformers encoder under ONNX Runtime: same weights, faster on CPUs.

The transformer is exported once with ``torch.onnx.export`` into the cache; pooling and
normalisation are done here exactly as sentence-transformers does them. Only the common shape
Transformer -> Pooling(mean or cls) -> [Normalize] is exported; anything else stays on torch.
Embeddings agree with the torch ones to a cosine of 0.99999 or better (checked in the tests).

The int8 variant is the float export dynamically quantized by ONNX Runtime (MatMul weights to
int8, one scale per output channel; activations quantized per run), also made once into the
cache. Measured on SciFact abstracts with all-MiniLM-L6-v2 (mean cosine to the float embeddings):
one scale per tensor keeps only 0.937, per channel 0.995; with the feed-forward down-projections
left in float (their input, after GELU, has the outliers that int8 rounds worst) 0.998, at 1.6x
the float speed instead of 2.1x (one run under load; 1.5x on a quiet machine), and SciFact hybrid
nDCG@10 -0.002 instead of -0.009 (benchmarks/embedder_int8.py). The embedding table (Gather)
stays float: quantizing it saves disk, not time. Activations are quantized with one scale per
run, taken from the whole input tensor, so a text's int8 vector would depend on the texts and the
padding batched with it (cosine 0.994 to itself alone): the int8 encoder runs one text per run,
which on 2 cores was no slower than 8 (no padding either).
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
QUANTIZE_VERSION = "2"  # bump when the quantization recipe changes: a new cached file
QUANTIZATIONS = ("none", "int8")
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

    def __init__(self, model: Any, cache_dir: Path, source: str, *, quantize: str = "none") -> None:
        import onnxruntime as ort

        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, not {quantize!r}")
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.pooling = _pooling_mode(model)
        # The toolkit always works with unit vectors (inner product = cosine).
        self.normalize = True
        path = _export(model, cache_dir, source)
        if quantize == "int8":
            path = _quantize_int8(path)
        self.path = path
        self.run_batch = 1 if quantize == "int8" else MAX_RUN_BATCH
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
        batch_size = max(1, min(batch_size, self.run_batch))
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


def _quantize_int8(float_path: Path) -> Path:
    """The int8 dynamically quantized variant of an exported float model, made once beside it."""
    target = float_path.with_name(f"model-int8-q{QUANTIZE_VERSION}.onnx")
    if target.is_file():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log.info("Quantizing %s to int8 (once): %s", float_path, target)
    with tempfile.TemporaryDirectory(dir=float_path.parent) as tmp:
        # ONNX Runtime's recommended pre-processing (shape inference, constant folding); its
        # symbolic shape inference gives up on this graph, ONNX's own suffices.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        out = Path(tmp) / "model-int8.onnx"
        quantize_dynamic(
            str(prepared),
            str(out),
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=_down_projections(prepared),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
        os.replace(out, target)
    return target


def _down_projections(path: Path) -> list[str]:
    """Names of the MatMuls whose constant weight maps a wider input to a narrower output: the
    feed-forward down-projections of a BERT-like encoder (1536 -> 384 in all-MiniLM-L6-v2)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    found = []
    for node in graph.node:
        dims = shapes.get(node.input[1]) if node.op_type == "MatMul" else None
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            if not node.name:
                raise ValueError("an unnamed MatMul cannot be kept in float")
            found.append(node.name)
    return found


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
