"""OpenAI's chat completion format around a cited answer, and a conversation from its messages.

The last user message is the question; the earlier messages become a :class:`rag.chat.Chat` as
``rag chat`` builds one turn by turn: system messages and earlier instructions are standing
instructions, earlier question-and-answer pairs are the history that follow-ups are condensed
with. The answer's passages travel in a ``citations`` field beside OpenAI's fields (a client
reads it as an extra field), and in the last chunk of a stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from rag.answer import Answer
from rag.chat import Chat
from rag.engine import RAG
from rag.instructions import is_instruction
from rag.serve.errors import ApiError
from rag.serve.schemas import ChatMessage


def conversation(rag: RAG, messages: Sequence[ChatMessage]) -> tuple[Chat, str]:
    """A chat holding everything before the last user message with text, and that message.

    Messages after it (an assistant's partial reply, tool results) are not read: this server
    answers questions from documents, and calls no tools."""
    last = max((i for i, m in enumerate(messages) if m.asks()), default=None)
    if last is None:
        raise ApiError(400, "No user message with text: the last one is the question.")
    messages = messages[: last + 1]
    turns = [m for m in messages if m.role in ("user", "assistant")]
    text = turns[-1].text()
    question = text.strip() or text  # only separators (U+001C...) left: kept as sent
    system = [m.text().strip() for m in messages if m.role in ("system", "developer")]
    chat = rag.chat(instructions=[s for s in system if s])
    asked: str | None = None
    for m in turns[:-1]:
        if m.role == "user":
            if asked is not None:
                _unanswered(chat, asked)
            asked = m.text().strip()
        elif asked is not None:
            if is_instruction(asked):
                chat.instruct(asked)
            else:
                chat.history.append((asked, m.text()))
            asked = None
    if asked is not None:
        _unanswered(chat, asked)
    return chat, question


def _unanswered(chat: Chat, message: str) -> None:
    # A user message with no reply after it counts only if it was an instruction.
    if message and is_instruction(message):
        chat.instruct(message)


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def citations_of(answer: Answer) -> list[dict[str, Any]]:
    """The cited passages as ``rag ask --json`` lists them."""
    dumped: list[dict[str, Any]] = answer.model_dump(mode="json")["citations"]
    return dumped


def usage_of(answer: Answer) -> dict[str, int]:
    u = answer.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def completion(answer: Answer, model: str, completion_id: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_of(answer),
        "citations": citations_of(answer),
        "abstained": answer.abstained,
    }


def chunk(
    completion_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    answer: Answer | None = None,
    usage: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if answer is not None:
        data["citations"] = citations_of(answer)
        data["abstained"] = answer.abstained
        if usage:
            data["usage"] = usage_of(answer)
    return data


def event(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
