"""The chat models an OpenAI-compatible server answers through, one per ``llm_api``.

- :class:`ServerChatModel` (``"chat"``): langchain-openai's ``ChatOpenAI``; the server applies the
  model's chat template.
- :class:`Llama2CompletionsModel` (``"completions"``): the messages rendered in the Llama 2-chat
  format (:mod:`rag.llm.llama2_format`) and sent as plain text through langchain-openai's ``OpenAI``.

Both stream, turn failures into :class:`~rag.errors.LLMUnavailable` naming the URL, and end an
answer where the model starts repeating a sentence (:class:`rag.llm.repetition.RepetitionGuard`),
closing the request so that the server stops generating. Neither lets message text write the chat
template's markers (:func:`rag.llm.prompt_safety.neutralise`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import ConfigDict, Field

from rag.llm.backend import DEFAULT_STOP
from rag.llm.prompt_safety import neutralise
from rag.llm.repetition import RepetitionGuard
from rag.llm.server_errors import server_errors


def _text_chunk(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


def _usage_chunk(usage: dict[str, Any], metadata: dict[str, Any]) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata={
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
                "total_tokens": int(usage.get("input_tokens", 0))
                + int(usage.get("output_tokens", 0)),
            },
            response_metadata=metadata,
        )
    )


class _StreamGuard:
    """The state both stream guards share: the repetition guard, usage and metadata seen."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        # The server ends the answer at the stop strings already; ending it here too keeps the
        # streamed pieces the same as the embedded model's (and guards servers that ignore them).
        self.guard = RepetitionGuard(stop)
        self.usage: dict[str, Any] | None = None
        self.metadata: dict[str, Any] = {}

    def take(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk | None:
        """The text to pass on from ``chunk`` (None: nothing yet); records usage and metadata."""
        message = chunk.message
        if isinstance(message, AIMessageChunk) and message.usage_metadata:
            self.usage = dict(message.usage_metadata)
        self.metadata.update(message.response_metadata or {})
        text = self.guard.feed(str(message.content)) if message.content else ""
        return _text_chunk(text) if text else None

    @property
    def done(self) -> bool:
        return self.guard.done

    def tail(self) -> ChatGenerationChunk | None:
        tail = self.guard.finish()
        return _text_chunk(tail) if tail else None

    def needs_count(self) -> bool:
        # A stream cut short never receives the server's usage; count with its tokenizer instead.
        return not self.usage or self.guard.done


def _guard_chunks(
    chunks: Iterator[ChatGenerationChunk],
    count_usage: Callable[[str], dict[str, int]],
    stop: Sequence[str] = (),
) -> Iterator[ChatGenerationChunk]:
    """Stream ``chunks`` token by token until the model repeats a sentence; then stop reading
    (closing the request, so the server stops generating) and report the usage."""
    state = _StreamGuard(stop)
    try:
        for chunk in chunks:
            if (out := state.take(chunk)) is not None:
                yield out
            if state.done:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if (tail := state.tail()) is not None:
        yield tail
    usage = count_usage(state.guard.text) if state.needs_count() else state.usage
    yield _usage_chunk(usage or {}, state.metadata)


async def _aguard_chunks(
    chunks: AsyncIterator[ChatGenerationChunk],
    count_usage: Callable[[str], dict[str, int]],
    stop: Sequence[str] = (),
) -> AsyncIterator[ChatGenerationChunk]:
    """The async form of :func:`_guard_chunks`."""
    import asyncio

    state = _StreamGuard(stop)
    try:
        async for chunk in chunks:
            if (out := state.take(chunk)) is not None:
                yield out
            if state.done:
                break
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if (tail := state.tail()) is not None:
        yield tail
    usage = state.usage
    if state.needs_count():
        usage = await asyncio.to_thread(count_usage, state.guard.text)
    yield _usage_chunk(usage or {}, state.metadata)


def _counter(backend: Any, messages: Sequence[BaseMessage]) -> Callable[[str], dict[str, int]]:
    def count(text: str) -> dict[str, int]:
        if backend is None:
            return {}
        return {
            "input_tokens": backend.count_tokens(messages),
            "output_tokens": backend.count_text(text) if text else 0,
        }

    return count


class ServerChatModel(ChatOpenAI):
    """langchain-openai's ChatOpenAI, streaming, with two additions: failures are
    :class:`LLMUnavailable` naming the URL, and an answer ends where the model starts repeating
    a sentence (:class:`rag.llm.repetition.RepetitionGuard`), as the embedded model's does."""

    backend: Any = Field(default=None, exclude=True)

    @property
    def _url(self) -> str:
        return str(self.openai_api_base)

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # Every request body is built here; the server applies the chat template to it, so no
        # message may carry the template's own markers (counted alike by to_role_dicts).
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        for message in payload.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = neutralise(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = neutralise(part["text"])
        return payload

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        # Only reached when streaming is switched off for a call; invoke() streams otherwise.
        with server_errors(self._url):
            return super()._generate(*args, **kwargs)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        with server_errors(self._url):
            return await super()._agenerate(*args, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        with server_errors(self._url):
            upstream = super()._stream(messages, stop, None, **kwargs)
            stops = stop or self.stop or DEFAULT_STOP
            yield from _guard_chunks(upstream, _counter(self.backend, messages), stops)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        with server_errors(self._url):
            upstream = super()._astream(messages, stop, None, **kwargs)
            stops = stop or self.stop or DEFAULT_STOP
            async for chunk in _aguard_chunks(upstream, _counter(self.backend, messages), stops):
                yield chunk


class Llama2CompletionsModel(BaseChatModel):
    """Chat messages rendered in the Llama 2-chat format and sent to /v1/completions.

    A chat model to the chain, a plain completions LLM (langchain-openai's ``OpenAI``) to the
    server: the server sees only text and applies no chat template, so the prompt is templated
    exactly once. Answers stream, and end at a repeated sentence, as with the chat API.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: Any = Field(exclude=True)
    backend: Any = Field(exclude=True)

    @property
    def _llm_type(self) -> str:
        return "rag-llama2-completions"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.backend.model_name, "api": "completions"}

    def _metadata(self) -> dict[str, Any]:
        return {"model_name": self.backend.model_name}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt = self.backend.prompt_text(messages)
        stops = stop or list(DEFAULT_STOP)
        pieces = self.llm.stream(prompt, stop=stops, **kwargs)

        def upstream() -> Iterator[ChatGenerationChunk]:
            try:
                for piece in pieces:
                    yield ChatGenerationChunk(
                        message=AIMessageChunk(content=piece, response_metadata=self._metadata())
                    )
            finally:
                pieces.close()

        # The completions stream carries no usage: it is always counted with the server's
        # tokenizer (the prompt exactly as sent, the answer as kept).
        with server_errors(self.backend.base_url):
            yield from _guard_chunks(upstream(), _counter(self.backend, messages), stops)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt = self.backend.prompt_text(messages)
        stops = stop or list(DEFAULT_STOP)
        pieces = self.llm.astream(prompt, stop=stops, **kwargs)

        async def upstream() -> AsyncIterator[ChatGenerationChunk]:
            try:
                async for piece in pieces:
                    yield ChatGenerationChunk(
                        message=AIMessageChunk(content=piece, response_metadata=self._metadata())
                    )
            finally:
                await pieces.aclose()

        with server_errors(self.backend.base_url):
            async for chunk in _aguard_chunks(upstream(), _counter(self.backend, messages), stops):
                yield chunk
