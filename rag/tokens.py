"""Token counting with the tokenizer of the model that will read the text."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from rag.config import Settings
from rag.errors import ModelUnavailable

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
    """A SentencePiece ``.model`` file, such as Llama 2's ``tokenizer.model``."""

    def __init__(self, path: Path) -> None:
        try:
            import sentencepiece as spm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModelUnavailable(
                f"Reading {path} needs the sentencepiece package: pip install sentencepiece"
            ) from exc
        self.name = str(path)
        self._sp = spm.SentencePieceProcessor(model_file=str(path))

    @property
    def sp(self) -> Any:
        return self._sp

    def count(self, text: str) -> int:
        return len(self._sp.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(x) for x in self._sp.encode(list(texts))]


def tokenizer_name(settings: Settings) -> str:
    """The name recorded in manifests for the tokenizer these settings select."""
    from rag.default_model import DEFAULT_MODEL_NAME

    return settings.tokenizer or DEFAULT_MODEL_NAME


def load_tokenizer(settings: Settings) -> Tokenizer:
    """The tokenizer that counts chunk and prompt tokens for these settings."""
    if settings.tokenizer is None:
        from rag.default_model import DEFAULT_MODEL_NAME, default_model_dir

        return _load_hf(str(default_model_dir(settings.cache_dir)), DEFAULT_MODEL_NAME)
    return _load_named(settings.tokenizer)


@lru_cache(maxsize=8)
def _load_named(name: str) -> Tokenizer:
    path = Path(name).expanduser()
    if path.suffix == ".model" and path.is_file():
        return SentencePieceTokenizer(path)
    return _load_hf(name, name)


@lru_cache(maxsize=8)
def _load_hf(source: str, name: str) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelUnavailable(
            f"Cannot load tokenizer {source!r}: {exc}. Set 'tokenizer' to a local tokenizer "
            "directory or a SentencePiece .model file."
        ) from exc
    # Counting long documents is intended; silence the "sequence longer than max" warning.
    tok.model_max_length = 10**9
    return HFTokenizer(name, tok)
