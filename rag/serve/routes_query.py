"""The query routes: ``/v1/chat/completions`` (OpenAI's), ``/v1/ask`` and ``/v1/retrieve``.

The routes are plain functions, run in the server's thread pool: the library's calls block
(embedding, FAISS, the model), and each request holds its lease on the snapshot it started with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rag.answer import Answer
from rag.errors import RagError
from rag.serve import completions
from rag.serve.context import Ctx, Served
from rag.serve.errors import ApiError, body, from_library, unexpected
from rag.serve.permissions import permitted
from rag.serve.schemas import (
    AskRequest,
    ChatCompletionRequest,
    FilterSpec,
    RetrieveRequest,
    has_text,
)

log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/v1/retrieve")
def retrieve(req: RetrieveRequest, ctx: Ctx) -> dict[str, Any]:
    """The passages the Python API's ``retrieve`` returns, best first."""
    _check_question(ctx, req.question)
    filters = _filters(req.filters)
    with ctx.index.lease() as rag:
        passages = rag.retrieve(
            req.question, req.k, filters=filters, **_permitted(ctx, req.overrides())
        )
        names = ctx.names(rag)
    data = {"question": req.question, "passages": [p.model_dump(mode="json") for p in passages]}
    return names.rewrite(data)


@router.post("/v1/ask")
def ask(req: AskRequest, ctx: Ctx) -> dict[str, Any]:
    """What ``rag ask --json`` prints: the answer with its citations, passages and usage."""
    _check_question(ctx, req.question)
    filters = _filters(req.filters)
    with ctx.index.lease() as rag:
        answer = rag.ask(
            req.question,
            history=req.history,
            instructions=req.instructions,
            filters=filters,
            **_permitted(ctx, req.overrides.given()),
        )
        names = ctx.names(rag)
    return names.rewrite(answer.model_dump(mode="json"))


@router.post("/v1/chat/completions", response_model=None)
def chat_completions(
    req: ChatCompletionRequest, ctx: Ctx, request: Request
) -> dict[str, Any] | StreamingResponse:
    """OpenAI's chat completion: the answer cites ``[n]``; ``citations`` holds the passages."""
    model = ctx.config.served_model
    if req.model and req.model != model:
        raise ApiError(
            404,
            f"The model {req.model!r} is not served here; this server answers as {model!r} "
            "(GET /v1/models).",
            "not_found_error",
        )
    if len(req.messages) > ctx.config.limits.max_messages:
        raise ApiError(
            413,
            f"{len(req.messages)} messages; a conversation may hold at most "
            f"{ctx.config.limits.max_messages}. Drop the oldest turns.",
        )
    filters = _filters(req.filters)
    overrides = _permitted(ctx, req.overrides())
    completion_id = completions.new_id()
    if not req.stream:
        with ctx.index.lease() as rag:
            chat, question = completions.conversation(rag, req.messages)
            _check_question(ctx, question)
            answer = chat.send(question, filters=filters, **overrides)
            names = ctx.names(rag)
        return names.rewrite(completions.completion(answer, model, completion_id))
    # Checked before the stream starts, so that a bad request is a 4xx, not a broken stream.
    with ctx.index.lease() as rag:
        _, question = completions.conversation(rag, req.messages)
    _check_question(ctx, question)

    request_id = str(getattr(request.state, "request_id", ""))

    def events() -> Generator[bytes, None, None]:
        created = int(time.time())

        def chunk(
            delta: dict[str, Any], finish: str | None = None, answer: Answer | None = None
        ) -> bytes:
            return completions.event(
                ctx.names(snap.rag).rewrite(
                    completions.chunk(
                        completion_id, model, created, delta, finish, answer, req.include_usage
                    )
                )
            )

        # The lease is taken here, not before: a stream that never starts holds none.
        snap = ctx.index.acquire()
        try:
            chat, _ = completions.conversation(snap.rag, req.messages)
            yield chunk({"role": "assistant", "content": ""})
            result = chat.stream(question, filters=filters, **overrides)
            if isinstance(result, Answer):  # an instruction, acknowledged at once
                answer = result
                yield chunk({"content": answer.answer})
            else:
                for piece in result:
                    yield chunk({"content": piece})
                assert result.answer is not None
                answer = result.answer
            yield chunk({}, "stop", answer)
            yield completions.event("[DONE]")
        except RagError as exc:
            err = from_library(exc, request_id, request.app.state.scrub)
            yield completions.event(body(err.status, err.message, err.kind, request_id))
        except Exception as exc:
            err = unexpected(exc, request_id)
            yield completions.event(body(err.status, err.message, err.kind, request_id))
        finally:
            ctx.index.release(snap)

    return LeasedStream(events())


class LeasedStream(StreamingResponse):
    """A streamed answer whose generator holds a lease on a snapshot until its ``finally``.

    When a client disconnects, Starlette leaves the body iterator where it stands, and that
    ``finally`` would run only once the garbage collector finds the abandoned generator: a
    snapshot retired by a write meanwhile kept its files, maps and threads open. So the generator
    is closed as soon as the response ends, however it ends.
    """

    def __init__(self, events: Generator[bytes, None, None]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded, as a disconnect may cancel this task; in a worker thread, as releasing
            # the last lease closes a snapshot's files. The generator is not running here: a
            # cancelled step in the thread pool is waited for, not abandoned.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._events.close)


def _permitted(ctx: Served, overrides: dict[str, Any]) -> dict[str, Any]:
    return permitted(overrides, ctx.config.allow_overrides, ctx.config.token_bound)


def _filters(spec: FilterSpec | None) -> Any:
    if spec is None:
        return None
    try:
        return spec.to_filters()
    except ValueError as exc:
        raise ApiError(400, f"Invalid filters: {exc}") from exc


def _check_question(ctx: Served, question: str) -> None:
    limit = ctx.config.limits.max_question_chars
    if len(question) > limit:
        raise ApiError(
            413,
            f"The question has {len(question)} characters; the limit is {limit} "
            "(rag serve --max-question-chars).",
        )
    if not has_text(question):
        raise ApiError(400, "The question is empty.")
