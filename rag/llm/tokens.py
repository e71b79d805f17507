"""Token counting with the tokenizer of the model that will read the text.

:func:`load_tokenizer` is the one decision of which tokenizer counts text for given settings; the
ingest chunker calls it, and every backend's ``text_tokens()`` returns its answer. A model's own
tokenizer is loaded once per process (:func:`model_tokenizer`), so the in-process backends
template prompts with the very object that counted the chunks, and never to count do weights load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from rag.config import Settings
from rag.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What chunking and packing need from a tokenizer."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


class HFTokenizer:
    """A Hugging Face (fast) tokenizer; counts exclude special tokens."""

    def __init__(self, name: str, tokenizer: Any) -> None:
        self.name = name
        self._tok = tokenizer

    @property
    def hf(self) -> Any:
        return self._tok

    def count(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = self._tok(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]


class SentencePieceTokenizer:
    """A SentencePiece ``.model`` file, such as Llama 2's ``tokenizer.model``; counts exclude
    BOS/EOS, as :class:`HFTokenizer`'s exclude special tokens."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        try:
            import sentencepiece as spm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModelUnavailable(
                f"Reading {path} needs the sentencepiece package: pip install sentencepiece"
            ) from exc
        # The name as configured (the manifest records it), not the expanded path.
        self.name = name or str(path)
        self._sp = spm.SentencePieceProcessor(model_file=str(path))

    @property
    def sp(self) -> Any:
        return self._sp

    def count(self, text: str) -> int:
        return len(self._sp.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(x) for x in self._sp.encode(list(texts))]


def tokenizer_name(settings: Settings) -> str:
    """The name recorded in manifests for the tokenizer :func:`load_tokenizer` uses.

    Raises :class:`ConfigError` when the settings name a served model whose tokenizer is unknown.
    """
    from rag.llm.default_model import embedded_model

    if settings.tokenizer:
        return settings.tokenizer
    return _reading_model(settings) or embedded_model(settings).name


def load_tokenizer(settings: Settings) -> Tokenizer:
    """The tokenizer that counts chunk and prompt tokens for these settings.

    Without a ``tokenizer`` setting it is the tokenizer of the model that will read the chunks:
    the embedded model's, or the one named by ``llm_model`` for a server (or in-process vLLM),
    loaded from a local directory or the Hugging Face cache, never downloaded here. A served
    model whose tokenizer is not available that way raises :class:`ConfigError` naming
    ``--tokenizer``, rather than counting in another model's tokens.
    """
    if settings.tokenizer is not None:
        return _load_named(settings.tokenizer)
    model = _reading_model(settings)
    if model is None:
        from rag.llm.default_model import embedded_model

        return default_model_tokenizer(settings.cache_dir, embedded_model(settings).name)
    try:
        return model_tokenizer(model, offline=True)
    except ModelUnavailable as exc:
        raise ConfigError(
            f"Chunks are counted in tokens of the model that reads them, and the tokenizer of "
            f"llm_model {model!r} is not available offline (not a local model directory, nor in "
            f"the Hugging Face cache): {exc.__cause__ or exc}. {_NAME_A_TOKENIZER}"
        ) from exc


_NAME_A_TOKENIZER = (
    "Name the served model's tokenizer with --tokenizer (or RAG_TOKENIZER, or 'tokenizer' in "
    "rag.toml): a local tokenizer directory, a Hugging Face name already downloaded, or a "
    "SentencePiece file, e.g. --tokenizer /models/Llama-2-7b-chat-hf or "
    "--tokenizer /models/llama2/tokenizer.model."
)


def _reading_model(settings: Settings) -> str | None:
    """The model, other than a packaged one, that will read the chunks; None: the packaged model
    (``llm_model = "embedded:NAME"``, or the default).

    Mirrors the backend choice of :func:`rag.llm.factory.make_backend`.
    """
    from rag.llm.default_model import EMBEDDED_PREFIX

    backend = settings.llm_backend
    if backend == "vllm":
        if (settings.llm_model or "").startswith(EMBEDDED_PREFIX):
            return None  # vLLM runs the exported packaged model
        return settings.llm_model  # None: vLLM runs the exported default model
    if backend == "server" or (backend == "auto" and settings.llm_url):
        if not settings.llm_model:
            raise ConfigError(
                "Chunks are counted in tokens of the model that reads them, but no llm_model "
                f"names the served model. Pass --llm-model NAME, or: {_NAME_A_TOKENIZER}"
            )
        return settings.llm_model
    return None


def model_tokenizer(source: str, name: str | None = None, *, offline: bool = False) -> HFTokenizer:
    """The Hugging Face tokenizer of the model at ``source`` (a directory or a hub name), loaded
    once per process and shared: the in-process backends template prompts with it, and it counts
    chunk text when the settings name no other tokenizer. ``offline``: never downloaded."""
    return _load_hf(source, name or source, offline, None)


def default_model_tokenizer(cache_dir: Path, name: str | None = None) -> HFTokenizer:
    """The tokenizer of a packaged model (``name``; None: the default), without loading the
    model's weights: from the unpacked model directory, or, before the model's first use has
    unpacked it, straight from the GGUF file (the same vocabulary: the directory's tokenizer is
    saved from it). A GGUF file split over packages is unpacked first."""
    from rag.llm.default_model import (
        DEFAULT_MODEL_NAME,
        MODELS,
        export_default_model,
        gguf_path,
        unpacked_dir,
    )

    model = MODELS[name or DEFAULT_MODEL_NAME]
    target = unpacked_dir(cache_dir, model.name)
    if model.assembled:
        export_default_model(target, model)
    if (target / "config.json").is_file():
        return model_tokenizer(str(target), model.name, offline=True)
    gguf = gguf_path(model)
    return _load_hf(str(gguf.parent), model.name, True, gguf.name)


@lru_cache(maxsize=8)
def _load_named(name: str) -> Tokenizer:
    path = Path(name).expanduser()
    if path.suffix == ".model" and path.is_file():
        return SentencePieceTokenizer(path, name)
    return model_tokenizer(name)


# Always called with every argument given positionally, so that equal calls share one entry.
@lru_cache(maxsize=8)
def _load_hf(source: str, name: str, offline: bool, gguf_file: str | None) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer

        # offline: a local directory or the Hugging Face cache only, whatever HF_HUB_OFFLINE says.
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        tok = AutoTokenizer.from_pretrained(source, local_files_only=offline, **extra)
    except Exception as exc:
        raise ModelUnavailable(
            f"Cannot load tokenizer {source!r}: {exc}. Set 'tokenizer' to a local tokenizer "
            "directory or a SentencePiece .model file."
        ) from exc
    # Counting long documents is intended; silence the "sequence longer than max" warning.
    tok.model_max_length = 10**9
    return HFTokenizer(name, tok)
