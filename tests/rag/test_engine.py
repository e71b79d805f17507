"""End to end with real parts: the embedder, FAISS, real PDFs and the embedded LLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG, Answer
from rag.config import Settings
from rag.errors import ConfigError, IndexMismatch, IndexNotFound
from rag.retrieval.embeddings import Embedder

QUESTION = "What does the Transformer use instead of recurrence?"


@pytest.fixture(scope="module")
def rag(built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder) -> RAG:
    return RAG.open(built_index[0], settings, embedder=embedder)


def test_retrieve_finds_the_attention_paper(rag: RAG) -> None:
    hits = rag.retrieve(QUESTION, k=3)
    assert [h.n for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert "attention_is_all_you_need" in Path(hits[0].source).name
    assert hits[0].page is not None and hits[0].page >= 1
    # The span points at the exact text on that page.
    assert hits[0].end - hits[0].start == len(hits[0].text)


def test_ask_cites_the_right_file_and_page(rag: RAG) -> None:
    answer = rag.ask(QUESTION, max_tokens=64)
    assert isinstance(answer, Answer)
    assert answer.answer
    assert not answer.abstained
    assert answer.citations, answer.answer
    cited = answer.citations[0]
    assert Path(cited.source).name == "attention_is_all_you_need_neurips2017.pdf"
    # The answer's key sentence (no recurrence, attention instead) is on pages 1-2 of the paper.
    assert cited.page in (1, 2, 3, 5)
    assert "attention" in cited.text.lower()
    assert answer.model == "smollm2-135m-instruct"
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 64
    assert {c.n for c in answer.citations} <= {p.n for p in answer.passages}


def test_stream_yields_text_then_the_same_answer(rag: RAG) -> None:
    stream = rag.stream(QUESTION, max_tokens=24)
    pieces = list(stream)
    assert len(pieces) > 1
    assert stream.answer is not None
    assert stream.answer.answer.strip() == "".join(pieces).strip()
    assert stream.answer.usage.completion_tokens <= 24


def test_sampling_settings_per_call(rag: RAG) -> None:
    a = rag.ask(QUESTION, temperature=0.9, top_p=0.9, seed=7, max_tokens=16, top_k=2)
    b = rag.ask(QUESTION, temperature=0.9, top_p=0.9, seed=7, max_tokens=16, top_k=2)
    assert len(a.passages) == 2
    assert a.answer == b.answer  # same seed, same sample
    with pytest.raises(ConfigError, match="per-call overrides"):
        rag.ask(QUESTION, temprature=0.2)
    with pytest.raises(ConfigError):
        rag.ask(QUESTION, temperature=5.0)


def test_missing_index_says_how_to_build_one(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(IndexNotFound, match="rag ingest"):
        RAG.open(tmp_path / "nope", settings)


def test_other_embedder_is_refused_with_the_fix(
    built_index: tuple[Path, IngestReport], settings: Settings
) -> None:
    other = settings.model_copy(update={"embedder": "BAAI/bge-small-en-v1.5"})
    with pytest.raises(IndexMismatch, match="--embedder sentence-transformers/all-MiniLM-L6-v2"):
        RAG.open(built_index[0], other)


def test_abstains_when_no_document_holds_the_answer(rag: RAG) -> None:
    answer = rag.ask("What is the capital of Peru?", max_tokens=32)
    assert answer.abstained
    assert answer.citations == []
    assert answer.passages, "the nearest passages are still listed"
    assert answer.usage.completion_tokens == 0  # weak evidence: the model was not asked
    assert "don't know" in answer.answer
    assert all((p.similarity or 0) < 0.35 for p in answer.passages)


def test_prepare_shows_the_exact_prompt(rag: RAG) -> None:
    packed = rag.prepare(QUESTION, top_k=2)
    assert len(packed.passages) == 2
    assert QUESTION in str(packed.messages[-1].content)
    assert "Passage [1]" in str(packed.messages[-1].content)
    assert packed.prompt_tokens == rag.backend.count_tokens(packed.messages)


@pytest.mark.slow
def test_ask_stream_and_ask_many_abstain_alike(rag: RAG) -> None:
    """One question gets the same ``abstained`` from ask, stream, ask_many and aask_many."""
    import asyncio

    unrelated = "What is the capital of Peru?"
    # A threshold between the two questions' best cosine similarities, read from the index, so
    # that the unrelated question has weak evidence and the answerable one does not.
    weak = max(p.similarity or 0.0 for p in rag.retrieve(unrelated, k=4))
    strong = max(p.similarity or 0.0 for p in rag.retrieve(QUESTION, k=4))
    assert weak < strong
    calls = {"top_k": 4, "max_tokens": 16, "abstain_below": (weak + strong) / 2}

    streamed = {}
    for q in (unrelated, QUESTION):
        stream = rag.stream(q, **calls)
        list(stream)
        assert stream.answer is not None
        streamed[q] = stream.answer
    asked = {q: rag.ask(q, **calls) for q in (unrelated, QUESTION)}
    many = rag.ask_many([unrelated, QUESTION], concurrency=2, **calls)
    amany = asyncio.run(rag.aask_many([unrelated, QUESTION], concurrency=2, **calls))
    for how, answers in {
        "ask": [asked[unrelated], asked[QUESTION]],
        "stream": [streamed[unrelated], streamed[QUESTION]],
        "ask_many": many,
        "aask_many": amany,
    }.items():
        off, on = answers
        assert isinstance(off, Answer) and isinstance(on, Answer), (how, off, on)
        assert off.abstained, f"{how} answered a question with weak evidence: {off.answer!r}"
        # Abstained before asking the model, as the threshold requires.
        assert off.usage.completion_tokens == 0, how
        assert not on.abstained, f"{how} abstained on an answerable question: {on.answer!r}"


def test_the_model_is_made_once_for_concurrent_callers_and_snapshots(
    built_index: tuple[Path, IngestReport],
    settings: Settings,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading
    import time

    import rag.llm.factory as factory

    made: list[object] = []
    real = factory.make_backend

    def slow_make(s: Settings) -> object:
        time.sleep(0.5)  # a model load takes seconds: both threads are inside at once
        backend = real(s)
        made.append(backend)
        return backend

    monkeypatch.setattr(factory, "make_backend", slow_make)
    first = RAG.open(built_index[0], settings, embedder=embedder)
    second = first.over(first.store)
    try:
        got: list[object] = []
        threads = [
            threading.Thread(target=lambda r=r: got.append(r.backend)) for r in (first, second)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(made) == 1
        assert got[0] is got[1] is made[0]
        assert first.over(first.store).backend is made[0]
    finally:
        first.close()
