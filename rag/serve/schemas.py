"""Request bodies of the API, validated by pydantic; unknown fields are refused with their name.

The answer and passage objects are those of the Python API (:class:`rag.answer.Answer`,
:class:`rag.answer.Citation`), so ``/v1/ask`` returns what ``rag ask --json`` prints.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

from rag.index.filters import Filters


def _json_number(value: Any) -> Any:
    # pydantic's lax mode takes true, "0.5" and "1" for numbers; JSON Schema does not.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


def _json_integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 3.0 is an integer in JSON Schema
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a JSON integer")
    return value


# After the bounds in each Annotated[...]: placed before them, pydantic would write the bounds
# into the JSON schema as "ge"/"le", which no client reads.
JSON_NUMBER = BeforeValidator(_json_number)
JSON_INTEGER = BeforeValidator(_json_integer)
Page = Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER]
# Something other than white space: the JSON Schema pattern, and what the server checks. White
# space as JSON Schema's regular expressions (ECMA-262) define \s, spelled out, because Python's
# \s also takes the separators U+001C-U+001F, which ECMA-262 counts as text.
TEXT_PATTERN = "[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterSpec(_Strict):
    """Restrict the passages, as ``rag ask --source/--type/--pages`` do."""

    source: str | None = Field(None, description="Glob on the path, or on the file name.")
    kinds: list[Literal["pdf", "text", "markdown", "html", "docx"]] | None = Field(
        None, description="Only documents of these types."
    )
    pages: tuple[Page, Page] | None = Field(
        None,
        description="Only PDF pages between these two, inclusive, 1-based ([5, 9] and [9, 5] "
        "are the same range).",
    )

    def to_filters(self) -> Filters | None:
        pages = None if self.pages is None else (min(self.pages), max(self.pages))
        f = Filters(
            source_glob=self.source,
            kinds=tuple(self.kinds) if self.kinds else None,
            pages=pages,
        )
        return None if f.is_empty() else f


class _RetrievalSettings(_Strict):
    """The per-call retrieval settings, shared by ``/v1/retrieve`` and ``/v1/ask``."""

    retrieval_mode: Literal["dense", "lexical", "hybrid"] | None = None
    hybrid_alpha: Annotated[float, Field(ge=0.0, le=1.0), JSON_NUMBER] | None = None
    fetch_k: Annotated[int, Field(ge=1, le=1000), JSON_INTEGER] | None = None
    mmr: StrictBool | None = None
    mmr_lambda: Annotated[float, Field(ge=0.0, le=1.0), JSON_NUMBER] | None = None


class Overrides(_RetrievalSettings):
    """Per-call settings, as the Python API's ``ask``/``retrieve`` keyword arguments."""

    temperature: Annotated[float, Field(ge=0.0, le=2.0), JSON_NUMBER] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0), JSON_NUMBER] | None = None
    max_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        None, description="Lowered to the server's --max-tokens-limit when above it."
    )
    seed: Annotated[int, Field(ge=0, le=2**53 - 1), JSON_INTEGER] | None = None
    top_k: Annotated[int, Field(ge=1, le=100), JSON_INTEGER] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0), JSON_NUMBER] | None = None
    abstain_below: Annotated[float, Field(ge=-1.0, le=1.0), JSON_NUMBER] | None = None
    answer_mode: Literal["auto", "generate", "extract"] | None = None
    extract_min_score: Annotated[float, Field(ge=-1.0, le=2.0), JSON_NUMBER] | None = None
    extract_top_k: Annotated[int, Field(ge=1, le=100), JSON_INTEGER] | None = None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class RetrieveRequest(_RetrievalSettings):
    question: str = Field(pattern=TEXT_PATTERN)
    k: Annotated[int, Field(ge=1, le=100), JSON_INTEGER] | None = Field(
        None, description="Passages to return."
    )
    filters: FilterSpec | None = None

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"question", "k", "filters"})


class AskRequest(_Strict):
    question: str = Field(pattern=TEXT_PATTERN)
    history: list[tuple[str, str]] = Field(
        default_factory=list, description="Earlier (question, answer) turns."
    )
    instructions: list[str] = Field(
        default_factory=list, description="Standing instructions added to the system prompt."
    )
    filters: FilterSpec | None = None
    overrides: Overrides = Field(default_factory=Overrides)


class ChatMessage(BaseModel):
    # Clients send fields of their own (name, tool_calls); they are ignored, not refused.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text of the message; a list of content parts keeps its text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(p.get("text", "")) for p in self.content if p.get("type") in ("text", None)
        )

    def asks(self) -> bool:
        """A user message with text in it: one that can be the question."""
        return self.role == "user" and has_text(self.text())


def has_text(text: str) -> bool:
    """Something other than white space, as TEXT_PATTERN says in the schema."""
    return re.search(TEXT_PATTERN, text) is not None


# A user message with text: what a conversation must hold to have a question (JSON Schema; the
# server checks the same with ChatMessage.asks()).
_ASKING_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                {"type": "string", "pattern": TEXT_PATTERN},
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["text"],
                        "properties": {
                            "type": {"const": "text"},
                            "text": {"type": "string", "pattern": TEXT_PATTERN},
                        },
                    },
                },
            ]
        },
    },
}


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields this server does not use are accepted and
    ignored (n > 1, tools and logprobs are refused, since they would change the answer)."""

    model: str | None = None
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The conversation. The question is the last user message with text; "
        "messages after it are not read, earlier ones are the conversation so far.",
        json_schema_extra={"contains": _ASKING_MESSAGE},
    )
    temperature: Annotated[float, Field(ge=0.0, le=2.0), JSON_NUMBER] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0), JSON_NUMBER] | None = None
    max_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        None, description="Lowered to the server's --max-tokens-limit when above it."
    )
    max_completion_tokens: Annotated[int, Field(ge=1), JSON_INTEGER] | None = Field(
        None, description="As max_tokens, which it replaces in OpenAI's API."
    )
    seed: Annotated[int, Field(ge=0, le=2**53 - 1), JSON_INTEGER] | None = None
    stream: StrictBool = False
    n: Annotated[int, Field(ge=1, le=1), JSON_INTEGER] | None = None
    stream_options: dict[str, Any] | None = None  # {"include_usage": true}: usage in the last chunk
    # Not OpenAI's: restricts the passages, as /v1/ask's filters do.
    filters: FilterSpec | None = None

    @field_validator("messages")
    @classmethod
    def _has_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.asks() for m in messages):
            raise ValueError("no user message with text: the last one is the question")
        return messages

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def overrides(self) -> dict[str, Any]:
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "seed": self.seed,
        }
        return {k: v for k, v in values.items() if v is not None}
