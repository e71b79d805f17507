"""Messages of a chat completion become the conversation ``rag chat`` would have built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport
from rag.config import Settings
from rag.engine import RAG
from rag.retrieval.embeddings import Embedder
from rag.serve.completions import conversation
from rag.serve.errors import ApiError
from rag.serve.schemas import ChatMessage


@pytest.fixture(scope="module")
def rag(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    settings: Settings,
    embedder: Embedder,
) -> Iterator[RAG]:
    with RAG.open(built_index[0], settings, embedder=embedder) as r:
        yield r


def _messages(*pairs: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage.model_validate({"role": role, "content": text}) for role, text in pairs]


def test_system_messages_and_earlier_instructions_are_standing_instructions(rag: RAG) -> None:
    chat, question = conversation(
        rag,
        _messages(
            ("system", "Answer briefly."),
            ("user", "Answer only in French from now on."),
            ("assistant", "Understood."),
            ("user", "What is multi-head attention?"),
            ("assistant", "Several attention functions in parallel. [1]"),
            ("user", "How many heads does it use?"),
        ),
    )
    assert question == "How many heads does it use?"
    assert chat.instructions == ["Answer briefly.", "Answer only in French from now on."]
    assert chat.history == [
        ("What is multi-head attention?", "Several attention functions in parallel. [1]")
    ]
    # A follow-up is searched for with the earlier question, as rag chat does without a model.
    assert chat.standalone_question(question, use_model=False) == (
        "What is multi-head attention? How many heads does it use?"
    )


def test_content_parts_are_read_as_text(rag: RAG) -> None:
    message = ChatMessage.model_validate(
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "BLEU?"}],
        }
    )
    assert conversation(rag, [message])[1] == "What is BLEU?"


@pytest.mark.parametrize(
    "pairs",
    [(("system", "Be brief."),), (("user", "   "),), (("assistant", "Hello"), ("user", "\u3000"))],
    ids=["no-user", "empty", "only-white-space"],
)
def test_a_conversation_must_hold_a_question(rag: RAG, pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ApiError) as err:
        conversation(rag, _messages(*pairs))
    assert err.value.status == 400


def test_the_question_is_the_last_user_message_with_text(rag: RAG) -> None:
    """What the schema says (a conversation holds a user message with text): messages after
    it, an assistant's partial reply or a tool's result, are not read."""
    chat, question = conversation(
        rag,
        _messages(
            ("user", "What is BLEU?"), ("assistant", "A score."), ("user", "And ROUGE?"),
            ("user", "  "), ("assistant", "Partial"), ("tool", "{}"),
        ),
    )  # fmt: skip
    assert question == "And ROUGE?"
    assert chat.history == [("What is BLEU?", "A score.")]
