"""What the backends that run a model in this process share: token counting (chat-template prompt
counts and the text tokenizer of their settings) and the sampling fields of their chat models."""

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
from rag.llm.tokens import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


class ChatTemplateTokens:
    """Token counting for in-process backends: prompts through the model's own chat template
    (exactly the ids generation starts from), plain text through the settings' tokenizer."""

    tokenizer: Any
    settings: Settings

    def text_tokens(self) -> Tokenizer:
        # Without a ``tokenizer`` setting this is the model's own tokenizer, the very object that
        # ``tokenizer`` templates prompts with (both are rag.llm.tokens.model_tokenizer's, offline).
        # With one, chunks are counted in it while prompts are still counted in the tokens the
        # model actually reads: the budget must be exact for what is generated from.
        return load_tokenizer(self.settings)

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
