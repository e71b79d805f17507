"""Packing is checked with the real Llama 2 tokenizer and the embedded model's tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage

from rag.errors import PromptTooLong
from rag.llm.embedded import EmbeddedBackend
from rag.llm.tokens import SentencePieceTokenizer
from rag.packing import build_messages, pack
from rag.prompts import load_templates
from tests.conftest import LLAMA2_TOKENIZER


def _docs(n: int, words: int = 120) -> list[Document]:
    return [
        Document(
            page_content=" ".join(f"fact{i}-{j}" for j in range(words)),
            metadata={"source": f"/d/file{i}.pdf", "page": i + 1},
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def llama2_count() -> object:
    if not LLAMA2_TOKENIZER.is_file():
        pytest.skip("Llama 2 tokenizer not available")
    sp = SentencePieceTokenizer(LLAMA2_TOKENIZER)

    def count(messages: Sequence[BaseMessage]) -> int:
        # Llama 2-chat: one BOS, [INST] <<SYS>> ... <</SYS>> ... [/INST]; counted over the text.
        text = "[INST] <<SYS>>\n" + str(messages[0].content) + "\n<</SYS>>\n\n"
        text += "\n".join(str(m.content) for m in messages[1:]) + " [/INST]"
        return 1 + sp.count(text)

    return count


def test_everything_fits_when_small(llama2_count: object) -> None:
    t = load_templates()
    packed = pack(
        templates=t,
        question="What is fact1?",
        passages=_docs(3, 20),
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=4096,
        max_tokens=256,
    )
    assert len(packed.passages) == 3
    assert packed.prompt_tokens + 256 <= 4096


def test_drops_lowest_ranked_passages_to_fit_exactly(llama2_count: object) -> None:
    t = load_templates()
    docs = _docs(40)
    packed = pack(
        templates=t,
        question="What is fact1?",
        passages=docs,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=4096,
        max_tokens=512,
    )
    assert 0 < len(packed.passages) < 40
    assert packed.passages == docs[: len(packed.passages)]  # a ranked prefix
    assert packed.prompt_tokens == llama2_count(packed.messages)  # type: ignore[operator]
    assert packed.prompt_tokens + 512 <= 4096
    # One more passage would not have fitted.
    bigger = pack(
        templates=t,
        question="What is fact1?",
        passages=docs[: len(packed.passages) + 1],
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=10**6,
        max_tokens=512,
    )
    assert bigger.prompt_tokens + 512 > 4096


def test_history_is_trimmed_oldest_first(llama2_count: object) -> None:
    t = load_templates()
    history = [(f"question {i} " + "word " * 300, f"answer {i} " + "word " * 300) for i in range(8)]
    packed = pack(
        templates=t,
        question="And then?",
        passages=_docs(4),
        history=history,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=4096,
        max_tokens=256,
    )
    assert 0 < packed.history_turns < 8
    contents = [str(m.content) for m in packed.messages]
    assert any(c.startswith("question 7") for c in contents)  # newest kept
    assert not any(c.startswith("question 0") for c in contents)  # oldest dropped
    assert len(packed.passages) == 4


def _turns(n: int, words: int) -> list[tuple[str, str]]:
    return [
        (f"question {i} " + "word " * words, f"answer {i} " + "word " * words) for i in range(n)
    ]


def test_latest_turn_is_kept_before_lowest_ranked_passages(llama2_count: object) -> None:
    """History and passages do not fit: older turns go, the latest stays, passages are cut."""
    t = load_templates()
    docs, history = _docs(40), _turns(4, 60)
    packed = pack(
        templates=t,
        question="And in French?",
        passages=docs,
        history=history,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=4096,
        max_tokens=512,
    )
    assert packed.history_turns == 1
    contents = [str(m.content) for m in packed.messages]
    assert contents[1].startswith("question 3") and contents[2].startswith("answer 3")
    assert not any(c.startswith(("question 2", "question 0")) for c in contents)
    n = len(packed.passages)
    assert 1 <= n < 40 and packed.passages == docs[:n]
    assert packed.prompt_tokens == llama2_count(packed.messages) <= 4096 - 512  # type: ignore[operator]
    # One more passage beside the latest turn would not have fitted.
    more = build_messages(t, "And in French?", docs[: n + 1], history[-1:])
    assert llama2_count(more) > 4096 - 512  # type: ignore[operator]


def test_latest_turn_beside_one_passage_wins_over_more_passages(llama2_count: object) -> None:
    """A window that holds the latest turn and exactly one passage: that is what is sent."""
    t, docs, history = load_templates(), _docs(6), _turns(3, 80)
    exact = llama2_count(build_messages(t, "And then?", docs[:1], history[-1:]))  # type: ignore[operator]
    packed = pack(
        templates=t,
        question="And then?",
        passages=docs,
        history=history,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=exact + 64,
        max_tokens=64,
    )
    assert (packed.history_turns, len(packed.passages)) == (1, 1)
    assert packed.prompt_tokens == exact


def test_turns_are_dropped_one_at_a_time(llama2_count: object) -> None:
    """A window that holds every passage and exactly the two latest turns keeps those two."""
    t, docs, history = load_templates(), _docs(3), _turns(5, 50)
    two = llama2_count(build_messages(t, "And then?", docs, history[-2:]))  # type: ignore[operator]
    packed = pack(
        templates=t,
        question="And then?",
        passages=docs,
        history=history,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=two + 32,
        max_tokens=32,
    )
    assert (packed.history_turns, len(packed.passages)) == (2, 3)
    assert str(packed.messages[1].content).startswith("question 3")


def test_latest_turn_too_long_for_one_passage_is_dropped(llama2_count: object) -> None:
    """A latest turn too long to fit beside one passage goes; passages then fill the window."""
    t, docs = load_templates(), _docs(5)
    history = _turns(1, 1500)
    three = llama2_count(build_messages(t, "And then?", docs[:3], []))  # type: ignore[operator]
    packed = pack(
        templates=t,
        question="And then?",
        passages=docs,
        history=history,
        count_tokens=llama2_count,  # type: ignore[arg-type]
        context_window=three + 64,
        max_tokens=64,
    )
    assert (packed.history_turns, len(packed.passages)) == (0, 3)


def test_question_too_long_is_a_clear_error(llama2_count: object) -> None:
    with pytest.raises(PromptTooLong, match="Shorten the question"):
        pack(
            templates=load_templates(),
            question="word " * 5000,
            passages=_docs(2),
            count_tokens=llama2_count,  # type: ignore[arg-type]
            context_window=4096,
            max_tokens=256,
        )


def test_embedded_backend_counts_exactly_what_it_generates_from(settings: object) -> None:
    backend = EmbeddedBackend.shared(settings)  # type: ignore[arg-type]
    t = load_templates()
    packed = pack(
        templates=t,
        question="What is fact1?",
        passages=_docs(30),
        count_tokens=backend.count_tokens,
        context_window=1024,
        max_tokens=128,
    )
    ids = backend.encode_messages(packed.messages)
    assert len(ids) == packed.prompt_tokens <= 1024 - 128
