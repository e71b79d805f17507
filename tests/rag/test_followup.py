"""Follow-up questions in extract mode, which has no model to rewrite them (issue 20, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG, followup
from rag.answer import AnswerStream, Citation
from rag.config import Settings
from rag.retrieval.embeddings import Embedder

FIRST = "What does the Transformer use instead of recurrence?"


def test_an_extract_follow_up_is_answered_with_the_earlier_question_in_view(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    chat = rag.chat(answer_mode="extract")
    first = chat.send(FIRST)
    # A first question is answered as a lone question is: nothing before it to carry.
    alone = rag.ask(FIRST, answer_mode="extract")
    assert first.answer == alone.answer and first.quotes == alone.quotes
    assert not first.abstained and "attention" in first.answer
    follow_up = chat.send("How many heads does it use?")
    assert not follow_up.abstained, follow_up.answer
    assert any("h = 8" in q.text and "heads" in q.text for q in follow_up.quotes), follow_up.answer
    assert "attention_is_all_you_need" in follow_up.quotes[0].source


def test_a_follow_up_streamed_is_answered_as_sent(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    sent, streamed = rag.chat(answer_mode="extract"), rag.chat(answer_mode="extract")
    sent.send(FIRST)
    streamed.send(FIRST)
    answer = sent.send("How many heads does it use?")
    stream = streamed.stream("How many heads does it use?")
    assert isinstance(stream, AnswerStream)
    assert "".join(stream) == answer.answer
    assert stream.answer.quotes == answer.quotes
    assert [q for q, _ in streamed.history] == [FIRST, "How many heads does it use?"]


def test_ask_with_history_reads_the_follow_up_as_a_chat_does(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    """The service builds its Chat from the request's messages; RAG.ask with the same history
    is the library's way to the same answer."""
    rag = RAG.open(built_index[0], settings, embedder=embedder)
    history = [(FIRST, "It relies entirely on attention. [1]")]
    answer = rag.ask("How many heads does it use?", history=history, answer_mode="extract")
    assert any("h = 8" in q.text for q in answer.quotes), answer.answer


def test_every_later_question_is_read_with_the_one_before_it() -> None:
    assert followup.conversation("How many heads does it use?", []) is None
    history = [("What is the Transformer?", "...")]
    assert followup.conversation("How many heads does it use?", history) == (
        "What is the Transformer? How many heads does it use?"
    )
    # A change of topic is read with the conversation too: the better of the two cosines and its
    # own words decide (benchmarks/followups.py measured both ways).
    assert followup.earlier_questions(history) == ["What is the Transformer?"]


def test_a_chain_of_follow_ups_goes_back_to_the_question_that_named_the_topic() -> None:
    history = [
        ("What is Llama 2?", "..."),
        ("What does the Transformer use instead of recurrence?", "..."),
        ("How many heads does it use?", "..."),
        ("And how many layers?", "..."),
    ]
    assert followup.earlier_questions(history) == [
        "What does the Transformer use instead of recurrence?",
        "How many heads does it use?",
        "And how many layers?",
    ]
    long = [(f"And what about part {i}?", "...") for i in range(6)]
    assert len(followup.earlier_questions(long)) == followup.MAX_EARLIER


@pytest.mark.parametrize(
    ("message", "refers_back"),
    [
        ("How many heads does it use?", True),
        ("What is the dimensionality of its inner layer?", True),
        ("Which ones are opened automatically?", True),
        ("And on English-to-French?", True),
        ("What about the decoder?", True),
        ("What is the default chunk size of rag-toolkit?", False),
        ("Who proposed replacing RNNs with self-attention?", False),
        ("Italy's economy", False),
    ],
)
def test_refers_back(message: str, refers_back: bool) -> None:
    assert followup.depends(message) is refers_back


@pytest.mark.parametrize(
    ("question", "noun"),
    [
        ("How many heads does it use?", "head"),
        ("How many word pieces does it read at most?", "piece"),
        ("And how many adversarial prompts for safety?", "prompt"),
        ("how many?", None),
        ("How much memory does it need?", None),
        ("What is multi-head attention?", None),
    ],
)
def test_counted_noun(question: str, noun: str | None) -> None:
    assert followup.counted_noun(question) == noun


def test_a_count_of_the_counted_noun_is_credited(embedder: Embedder) -> None:
    passage = Citation(
        n=1,
        source="paper.pdf",
        page=5,
        start=0,
        end=200,
        text=(
            "While single-head attention is 0.9 BLEU worse than the best setting, quality also "
            "drops off with too many heads. In this work we employ h = 8 parallel attention "
            "layers, or heads. The model was trained on eight GPUs for twelve hours."
        ),
        score=1.0,
        similarity=0.5,
        chunk_id=1,
    )
    found = followup.candidates_for(
        "How many heads does it use?",
        "What is the Transformer? How many heads does it use?",
        [passage],
        embedder,
    )
    counts = {c.sentence.text.split()[0]: c.numeric for c in found}
    # 0.9 measures BLEU and counts nothing; the GPUs are counted, but they are not heads.
    assert counts == {"While": 0.0, "In": 1.0, "The": 0.0}
    # "many" is the question's form: the sentence that says "too many heads" gets no more of
    # the word-overlap share than the one that says "heads".
    assert found[0].lexical == found[1].lexical
