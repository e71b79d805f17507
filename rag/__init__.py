"""Grounded, cited answers from your own documents.

>>> from rag import RAG
>>> answer = RAG.open("my-index").ask("What is this about?")   # doctest: +SKIP

Importing this package is light: models, torch and LangChain load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.config import Settings
from rag.errors import (
    ConfigError,
    IndexCorrupt,
    IndexLocked,
    IndexMismatch,
    IndexNotFound,
    LLMUnavailable,
    ModelUnavailable,
    NothingIngested,
    PromptTooLong,
    RagError,
)

if TYPE_CHECKING:
    from rag.answer import Answer, AnswerStream, Citation, Usage
    from rag.chat import Chat
    from rag.engine import RAG
    from rag.index.filters import Filters

__version__ = "0.1.0"

__all__ = [
    "RAG",
    "Answer",
    "AnswerStream",
    "Chat",
    "Citation",
    "ConfigError",
    "Filters",
    "IndexCorrupt",
    "IndexLocked",
    "IndexMismatch",
    "IndexNotFound",
    "LLMUnavailable",
    "ModelUnavailable",
    "NothingIngested",
    "PromptTooLong",
    "RagError",
    "Settings",
    "Usage",
    "__version__",
]

_LAZY = {
    "RAG": "rag.engine",
    "AnswerStream": "rag.answer",
    "Chat": "rag.chat",
    "Filters": "rag.index.filters",
    "Answer": "rag.answer",
    "Citation": "rag.answer",
    "Usage": "rag.answer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
