"""Answers end where the model starts repeating itself or runs on into an invented next turn,
while still streaming token by token: the server's streams and the embedded model's alike."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from rag.llm.backend import DEFAULT_STOP
from rag.llm.repetition import RepetitionGuard, guard_stream
from rag.llm.server_chat import _guard_chunks

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


def embedded(pieces: list[str], stop: tuple[str, ...] = DEFAULT_STOP) -> tuple[list[str], bool]:
    """What the embedded backend streams for generated ``pieces`` (EmbeddedBackend.generate
    passes the model's streamer through guard_stream), and whether it halted generation."""
    halt = threading.Event()
    return list(guard_stream(iter(pieces), stop, halt)), halt.is_set()


def served(text: str) -> list[str]:
    """What a server's stream yields for the same text (the usage chunk left out)."""
    chunks = _guard_chunks(_chunks(text, [], usage=True), lambda t: {}, DEFAULT_STOP)
    return [str(c.message.content) for c in chunks if c.message.content]


@pytest.mark.parametrize(
    "text",
    [
        LOOP + " more" * 50,
        "One fact. One fact",
        "A cat sat. A cat ran away. Done.",
        "Attention replaces recurrence [1].\nIt uses eight heads.\nIt uses eight heads.\nMore.",
    ],
)
def test_both_backends_trim_the_same_text_the_same_way(text: str) -> None:
    pieces, halted = embedded(tokens(text))
    assert pieces == served(text)
    _, guard = run(text)
    assert "".join(pieces).rstrip() == guard.text.rstrip()
    assert halted == guard.done


def test_a_stop_string_split_across_pieces_ends_the_answer() -> None:
    """Streamers release text at whitespace, so the newline of "\nQuestion:" arrives on its own."""
    pieces, halted = embedded(["The window is 4096 tokens [1].", "\n", "Question", ":", " Why?"])
    assert halted
    assert "".join(pieces) == "The window is 4096 tokens [1]."
    # Only the newline that might have begun a stop string was held back, nothing before it.
    assert pieces[0] == "The window is 4096 tokens [1]."


def test_text_that_only_starts_like_a_stop_string_is_released() -> None:
    pieces, halted = embedded(["Line one.", "\n", "Questions", " remain", "."])
    assert not halted
    assert "".join(pieces) == "Line one.\nQuestions remain."


def test_a_stop_string_inside_a_piece_cuts_there() -> None:
    pieces, halted = embedded(["It is 4096 [1].\nPassage [2] says", " more."])
    assert halted and "".join(pieces) == "It is 4096 [1]."
