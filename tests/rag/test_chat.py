"""Multi-turn chat with the embedded model on a real index."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG
from rag.config import Settings
from rag.retrieval.embeddings import Embedder


@pytest.mark.slow
def test_requests_about_the_documents_are_answered_not_stored(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    chat = rag.chat(max_tokens=4)
    requests = [
        "Give an overview of the attention mechanism.",
        "Use the paper to explain how positional encoding works",
    ]
    for message in requests:
        answer = chat.send(message)
        assert answer.passages, f"{message!r} was not looked up"
        assert not answer.answer.startswith("Understood")
    assert chat.instructions == []
    assert [q for q, _ in chat.history] == requests


@pytest.mark.slow
def test_ten_turns_keep_the_instruction_and_fit_the_window(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    window, max_tokens = 1024, 24
    small = settings.model_copy(update={"context_window": window, "max_tokens": max_tokens})
    rag = RAG.open(built_index[0], small, embedder=embedder)
    chat = rag.chat()
    ack = chat.send("Answer in one sentence from now on.")
    assert "one sentence" in ack.answer and ack.citations == []
    questions = [
        "What does the Transformer use instead of recurrence?",
        "How many layers does its encoder have?",
        "What is multi-head attention?",
        "What did the president say about Ukraine?",
        "What is llama2.c?",
        "How do I run the model in C?",
        "What BLEU score did the big model reach?",
        "What is positional encoding?",
        "What optimizer was used for training?",
    ]
    trimmed = False
    for i, q in enumerate(questions, start=2):
        packed = chat.prepare(q)
        system = str(packed.messages[0].content)
        assert "Answer in one sentence from now on." in system, f"turn {i} lost the instruction"
        assert packed.prompt_tokens + max_tokens <= window
        trimmed |= packed.history_turns < len(chat.history)
        answer = chat.send(q)
        assert answer.usage.prompt_tokens + answer.usage.completion_tokens <= window
        assert answer.usage.prompt_tokens == packed.prompt_tokens
    assert len(chat.history) == 9
    assert trimmed, "a 1,024-token window must have forced older turns out"


def test_follow_up_retrieves_with_the_previous_question(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    chat = rag.chat()
    chat.history.append(("What does the Transformer use instead of recurrence?", "Attention."))
    query = chat.standalone_question("How many layers does it have?")
    assert "Transformer" in query and "layers" in query
    packed = chat.prepare("How many layers does it have?")
    assert any("attention_is_all_you_need" in str(d.metadata["source"]) for d in packed.passages)
