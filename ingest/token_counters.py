"""Token counters that cross to worker processes: a copy of a Hugging Face fast tokenizer's Rust
backend, pickled as its JSON, which counts exactly as the tokenizer does and shares no state
with it."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any


class TokenCounter:
    """Counts tokens as a Hugging Face fast tokenizer does when called with
    ``add_special_tokens=False`` (no truncation, no padding), with a copy of its Rust backend: it
    pickles as the tokenizer's JSON and shares no state with the tokenizer it was made from."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self._json = hf_tokenizer.backend_tokenizer.to_str()
        self._split_special = bool(getattr(hf_tokenizer, "split_special_tokens", False))
        self._build()

    def _build(self) -> None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self._json)
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = self._split_special
        self._backend = backend

    def __getstate__(self) -> dict[str, Any]:
        return {"_json": self._json, "_split_special": self._split_special}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]


def portable_counter(tokenizer: Any) -> Callable[[Sequence[str]], list[int]] | None:
    """A picklable function that counts tokens as ``tokenizer`` does, or None.

    ``tokenizer`` is a Hugging Face tokenizer, or an object with ``count_many`` (such as
    :class:`rag.llm.tokens.HFTokenizer`, whose ``hf`` is its Hugging Face tokenizer).
    """
    hf = getattr(tokenizer, "hf", tokenizer)
    if hasattr(hf, "backend_tokenizer"):
        return TokenCounter(hf)
    count = getattr(tokenizer, "count_many", None)
    if count is None or type(tokenizer).__module__ == "__main__":
        return None  # a worker does not import the main module (see _without_main)
    try:
        pickle.dumps(count)
    except Exception:
        return None
    return count
