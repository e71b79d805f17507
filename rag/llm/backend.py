"""The one interface every LLM backend implements, and what the backends share.

Each backend hands out a LangChain chat model for the chain and is the one place its tokens are
counted: ``count_tokens(messages)`` counts a prompt exactly as the model will see it (the packer's
budget), and ``text_tokens()`` is the tokenizer that counts plain text such as chunks, the one
:func:`rag.llm.tokens.load_tokenizer` chooses for the backend's settings (the ingest chunker asks
that function directly, so that ingesting never loads a model's weights).
Every backend applies the model's own chat template to the messages (in-process through its
tokenizer, a server through /v1/chat/completions), so a request is templated exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from rag.config import Settings
from rag.llm.prompt_safety import neutralise
from rag.llm.tokens import Tokenizer

log = logging.getLogger(__name__)


class GenerationParams(Protocol):
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    repetition_penalty: float | None


# Small models run on into an invented next turn; these end the answer where a turn would start.
DEFAULT_STOP = ("\nQuestion:", "\nPassage [")


class LLMBackend(Protocol):
    """What the chain needs from a model."""

    @property
    def model_name(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """Prompt tokens of ``messages`` as the model reads them, template and specials included."""
        ...

    def text_tokens(self) -> Tokenizer:
        """The tokenizer that counts plain text (chunk sizes) for this backend's settings."""
        ...

    def chat_model(self, settings: Settings) -> BaseChatModel: ...


def to_role_dicts(
    messages: Sequence[BaseMessage], special_tokens: Iterable[str] = ()
) -> list[dict[str, str]]:
    """``messages`` as role dicts for a chat template, each content neutralised so that text
    from documents, questions or history cannot add turns (:func:`rag.llm.prompt_safety.neutralise`;
    ``special_tokens``: the model's own, when known)."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    special = list(special_tokens)
    out = []
    for m in messages:
        role = roles.get(m.type)
        if role is None:
            raise ValueError(f"unsupported message type {m.type!r}")
        out.append({"role": role, "content": neutralise(str(m.content), special)})
    return out
