"""Server answers end where the model starts repeating itself, while still streaming token by token."""

from __future__ import annotations

import re
from collections.abc import Iterator

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from rag.repetition import RepetitionGuard
from rag.server_chat import _guard_chunks

LOOP = "It is 4096 tokens long. It is 4096 tokens long. It is 4096 tokens long. It is"


def tokens(text: str) -> list[str]:
    return re.findall(r"\S+|\s+", text)


def run(text: str) -> tuple[list[str], RepetitionGuard]:
    guard = RepetitionGuard()
    out = [guard.feed(t) for t in tokens(text)]
    out.append(guard.finish())
    return out, guard


def test_a_loop_ends_after_its_first_sentence() -> None:
    out, guard = run(LOOP)
    assert guard.done
    assert "".join(out).strip() == guard.text == "It is 4096 tokens long."


def test_text_without_repeats_streams_token_by_token_unchanged() -> None:
    text = "Attention replaces recurrence [1]. It uses eight heads.\nThe window is 4096 tokens."
    out, guard = run(text)
    assert not guard.done
    assert "".join(out) == text
    # Nothing is held back: every token is released as it arrives.
    assert out[:-1] == tokens(text)


def test_a_sentence_that_only_starts_like_an_earlier_one_is_released() -> None:
    out, guard = run("A cat sat. A cat ran away. Done.")
    assert not guard.done
    assert "".join(out) == "A cat sat. A cat ran away. Done."
    # "A cat" was held back while it could still become a repeat, then released whole.
    assert "A cat ran" in "".join(out[:-1])


def test_a_repeat_at_the_very_end_is_dropped() -> None:
    out, guard = run("One fact. One fact.")
    assert guard.done and guard.text == "One fact."
    assert "".join(out).strip() == "One fact."


def _chunks(text: str, closed: list[bool], usage: bool) -> Iterator[ChatGenerationChunk]:
    try:
        for t in tokens(text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=t))
        if usage:
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata={"input_tokens": 7, "output_tokens": 9, "total_tokens": 16},
                )
            )
    finally:
        closed.append(True)


def test_guarded_stream_stops_reading_and_counts_usage_itself() -> None:
    closed: list[bool] = []
    counted: list[str] = []

    def count(text: str) -> dict[str, int]:
        counted.append(text)
        return {"input_tokens": 5, "output_tokens": 6}

    chunks = list(_guard_chunks(_chunks(LOOP + " more" * 100, closed, usage=True), count))
    assert closed == [True]  # the request is closed as soon as the loop shows
    text = "".join(str(c.message.content) for c in chunks)
    assert text.strip() == "It is 4096 tokens long."
    assert counted == ["It is 4096 tokens long."]
    last = chunks[-1].message
    assert isinstance(last, AIMessageChunk) and last.usage_metadata is not None
    assert (last.usage_metadata["input_tokens"], last.usage_metadata["output_tokens"]) == (5, 6)


def test_guarded_stream_keeps_the_servers_usage_when_complete() -> None:
    closed: list[bool] = []
    chunks = list(_guard_chunks(_chunks("Short answer [1].", closed, usage=True), lambda t: {}))
    last = chunks[-1].message
    assert isinstance(last, AIMessageChunk) and last.usage_metadata is not None
    assert last.usage_metadata["total_tokens"] == 16
    assert "".join(str(c.message.content) for c in chunks) == "Short answer [1]."
