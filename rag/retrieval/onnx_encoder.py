"""Run a sentence-transformers encoder under ONNX Runtime: same weights, faster on CPUs.

The transformer is exported once with ``torch.onnx.export`` into the cache; pooling and
normalisation are done here exactly as sentence-transformers does them. Only the common shape
Transformer -> Pooling(mean or cls) -> [Normalize] is exported; anything else stays on torch.
Once the file exists, encoding needs ONNX Runtime and the ``tokenizers`` library only: the
tokenizer, input limit, pooling and dimension come from the model directory's files
(:mod:`rag.retrieval.encoder_spec`), so a process that only queries never imports torch. The export
checks those against the loaded model, and the file's vectors against the model's own to 1e-5
(element-wise, on unit vectors), before it is published; a model that disagrees stays on torch.

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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.retrieval.encoder_spec import EncoderSpec

log = logging.getLogger(__name__)

# Bump when the export recipe or its checks change: a new cached file. "2": published only after
# the checks against the loaded model (files exported before them are made again, once).
_EXPORT_VERSION = "2"
QUANTIZE_VERSION = "2"  # bump when the quantization recipe changes: a new cached file
QUANTIZATIONS = ("none", "int8")
# Texts per ONNX Runtime call. Measured on a 2-core CPU with all-MiniLM-L6-v2 and 200-token
# chunks: 8 is faster than 16 or 32 (activations stay in cache) and peaks at 60% of the memory.
MAX_RUN_BATCH = 8
SPINNING = "session.intra_op.allow_spinning"  # ONNX Runtime session option
# Largest element-wise difference the export accepts between its unit vectors and the loaded
# model's (all-MiniLM-L6-v2 measured about 1e-6): a wrong tokenizer, input limit or pooling
# moves elements by 1e-2 or more, while float rounding in a larger model stays far below this.
EXPORT_TOLERANCE = 1e-4
# Texts the export checks: casing, accents, Chinese characters, digits, padding within a batch,
# and one longer than any input limit (truncated alike or not at all).
CHECK_TEXTS = (
    "short",
    "The Transformer relies entirely on SELF-ATTENTION to compute representations.",
    "Café, naïve façade: Ünïcödé àccents and   extra   spaces.",
    "混合检索结合了BM25和语义搜索。",
    "Llama 2 reads 4,096 tokens; all-MiniLM-L6-v2 reads 256 word pieces.",
    "word " * 600,
)


class OnnxEncoder:
    """``encode`` like SentenceTransformer.encode, for the supported shape, without torch."""

    def __init__(self, spec: EncoderSpec, path: Path, *, quantize: str = "none") -> None:
        import onnxruntime as ort

        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, not {quantize!r}")
        self.spec = spec
        self.tokenizer = spec.tokenizer()
        self.max_length = spec.max_seq_length
        self.pooling = spec.pooling
        self.dimension = spec.dimension
        # The toolkit always works with unit vectors (inner product = cosine).
        self.normalize = True
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

    @cached_property
    def _counter(self) -> Any:
        # A tokenizer of its own that neither pads nor truncates: a count is the whole text's.
        return self.spec.tokenizer(for_model=False)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, special tokens excluded, however long it is."""
        encodings = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        batch_size = max(1, min(batch_size, self.run_batch))
        # Longest first, so that each batch pads to similar lengths (as sentence-transformers does).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            encodings = self.tokenizer.encode_batch([texts[j] for j in idx])
            batch = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            feed = {k: v for k, v in batch.items() if k in self.inputs}
            hidden = self.session.run(None, feed)[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            if self.pooling == "mean":
                vecs = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            else:
                vecs = hidden[:, 0]
            if self.normalize:
                vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
            out[idx] = vecs
        return out


def float_model_path(cache_dir: Path, source: str) -> Path:
    """Where the float export of the model at ``source`` lives in ``cache_dir`` (or will)."""
    key = hashlib.sha256(f"{_EXPORT_VERSION}|{_fingerprint(source)}".encode()).hexdigest()[:16]
    return Path(cache_dir) / "onnx" / f"{Path(source).name}-{key}" / "model.onnx"


def export(model: Any, spec: EncoderSpec, target: Path) -> Path:
    """Export ``model`` (a loaded SentenceTransformer) to ``target`` once; needs torch.

    The file is published only when ``spec``, read from the model's files, describes the loaded
    model and the ONNX vectors of :data:`CHECK_TEXTS` match the model's own within
    :data:`EXPORT_TOLERANCE`; otherwise ValueError says what differs, and the model stays on torch.
    """
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
    log.info("Exporting %s to ONNX (once): %s", spec.model_dir, target)
    try:
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
        _check(model, spec, Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _check(model: Any, spec: EncoderSpec, path: Path) -> None:
    """ValueError unless ``spec`` and the ONNX file at ``path`` reproduce the loaded ``model``."""
    found = (spec.max_seq_length, spec.dimension)
    expected = (int(model.max_seq_length), int(model.get_embedding_dimension()))
    if found != expected:
        raise ValueError(
            f"the model's files give (max_seq_length, dimension) {found}, the loaded model "
            f"{expected}"
        )
    texts = list(CHECK_TEXTS)
    ours = spec.tokenizer().encode_batch(texts)
    theirs = model.tokenizer(texts, truncation=True, max_length=spec.max_seq_length)["input_ids"]
    for text, a, b in zip(texts, ours, theirs, strict=True):
        if [i for i, m in zip(a.ids, a.attention_mask, strict=True) if m] != list(b):
            raise ValueError(f"tokenizer.json splits {text[:40]!r} unlike the loaded tokenizer")
    reference = model.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    onnx = OnnxEncoder(spec, path).encode(texts, batch_size=len(texts))
    worst = float(np.abs(onnx - reference).max())
    if worst > EXPORT_TOLERANCE:
        raise ValueError(f"ONNX vectors differ from the model's by up to {worst:.2g}")
    log.info("ONNX export matches the model within %.2g", worst)


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
