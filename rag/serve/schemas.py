"""Request bodies of the API, validated by pydantic; unknown fields are refused with their name.

The answer and passage objects are those of the Python API (:class:`rag.answer.Answer`,
:class:`rag.answer.Citation`), so ``/v1/ask`` returns what ``rag ask --json`` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.index.filters import Filters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterSpec(_Strict):
    """Restrict the passages, as ``rag ask --source/--type/--pages`` do."""

    source: str | None = Field(None, description="Glob on the path, or on the file name.")
    kinds: list[Literal["pdf", "text", "markdown", "html", "docx"]] | None = Field(
        None, description="Only documents of these types."
    )
    pages: tuple[int, int] | None = Field(
        None, description="Only PDF pages first to last, inclusive, 1-based."
    )

    def to_filters(self) -> Filters | None:
        if self.pages is not None and not 1 <= self.pages[0] <= self.pages[1]:
            raise ValueError(
                f"pages counts from 1 and the first page comes first, not {list(self.pages)}"
            )
        f = Filters(
            source_glob=self.source,
            kinds=tuple(self.kinds) if self.kinds else None,
            pages=self.pages,
        )
        return None if f.is_empty() else f


class _RetrievalSettings(_Strict):
    """The per-call retrieval settings, shared by ``/v1/retrieve`` and ``/v1/ask``."""

    retrieval_mode: Literal["dense", "lexical", "hybrid"] | None = None
    hybrid_alpha: float | None = Field(None, ge=0.0, le=1.0)
    fetch_k: int | None = Field(None, ge=1, le=1000)
    mmr: bool | None = None
    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0)


class Overrides(_RetrievalSettings):
    """Per-call settings, as the Python API's ``ask``/``retrieve`` keyword arguments."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(
        None, ge=1, description="Lowered to the server's --max-tokens-limit when above it."
    )
    seed: int | None = None
    top_k: int | None = Field(None, ge=1, le=100)
    repetition_penalty: float | None = None
    abstain_below: float | None = Field(None, ge=-1.0, le=1.0)
    answer_mode: Literal["auto", "generate", "extract"] | None = None
    extract_min_score: float | None = None
    extract_top_k: int | None = Field(None, ge=1, le=100)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class RetrieveRequest(_RetrievalSettings):
    question: str = Field(min_length=1)
    k: int | None = Field(None, ge=1, le=100, description="Passages to return.")
    filters: FilterSpec | None = None

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"question", "k", "filters"})


class AskRequest(_Strict):
    question: str = Field(min_length=1)
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


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields this server does not use are accepted and
    ignored (n > 1, tools and logprobs are refused, since they would change the answer)."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(
        None, ge=1, description="Lowered to the server's --max-tokens-limit when above it."
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, description="As max_tokens, which it replaces in OpenAI's API."
    )
    seed: int | None = None
    stream: bool = False
    n: int | None = Field(None, ge=1, le=1)
    stream_options: dict[str, Any] | None = None  # {"include_usage": true}: usage in the last chunk
    # Not OpenAI's: restricts the passages, as /v1/ask's filters do.
    filters: FilterSpec | None = None

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
