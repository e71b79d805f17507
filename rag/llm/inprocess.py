"""What the backends that run a model in this process share: chat-template token counts and the
sampling fields of their chat models."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Self

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import ConfigDict, Field

from rag.config import Settings
from rag.llm.backend import to_role_dicts

log = logging.getLogger(__name__)


class ChatTemplateTokens:
    """Exact prompt counts for in-process backends: the model's own chat template, tokenized."""

    tokenizer: Any

    def encode_messages(self, messages: Sequence[BaseMessage]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            to_role_dicts(messages, self.special_tokens), add_generation_prompt=True, tokenize=True
        )
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        return len(self.encode_messages(messages))

    @cached_property
    def special_tokens(self) -> list[str]:
        """The tokenizer's special-token strings, which message text must not be able to write."""
        tok = self.tokenizer
        names = set(getattr(tok, "all_special_tokens", ()))
        for added in getattr(tok, "added_tokens_decoder", {}).values():
            if getattr(added, "special", False):
                names.add(str(added.content))
        return sorted(names)


class InProcessChatModel(BaseChatModel):
    """The sampling fields shared by the chat models that run a model in this process."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(exclude=True)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    repetition_penalty: float | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.model_name, "temperature": self.temperature}

    @classmethod
    def for_settings(cls, backend: Any, settings: Settings) -> Self:
        return cls(
            backend=backend,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            repetition_penalty=settings.repetition_penalty,
        )
