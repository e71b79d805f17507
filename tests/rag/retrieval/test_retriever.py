"""Retrieval modes, filters and MMR on a real index (real embedder, FAISS, SQLite FTS5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport, ingest
from rag import RAG
from rag.config import Settings
from rag.index.lexical import fts_query
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from rag.retrieval.fusion import convex_fusion
from rag.retrieval.retriever import Filters
from tests.conftest import DOCUMENTS

ESSAY = "paul_graham_essay.txt"
ESSAY_CRLF = "paul_graham_essay.crlf.txt"  # the same essay with CRLF line endings (MANIFEST.txt)
ESSAY_QUESTION = "Where did the author of the essay go to college?"


@pytest.fixture(scope="module")
def text_rag(
    tmp_path_factory: pytest.TempPathFactory,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> Iterator[RAG]:
    """The shared text documents, which hold one essay twice (LF and CRLF files)."""
    index = tmp_path_factory.mktemp("text-index") / "idx"
    ingest([DOCUMENTS / "text"], index, settings, embedder=embedder, tokenizer=tokenizer)
    with RAG.open(index, settings, embedder=embedder) as r:
        yield r


@pytest.fixture(scope="module")
def rag(built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder) -> RAG:
    return RAG.open(built_index[0], settings, embedder=embedder)


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_each_mode_finds_the_right_document(rag: RAG, mode: str) -> None:
    hits = rag.retrieve("multi-head attention heads scaled dot-product", k=3, retrieval_mode=mode)
    assert len(hits) == 3
    assert "attention_is_all_you_need" in Path(hits[0].source).name
    assert hits[0].score >= hits[-1].score


def test_lexical_matches_rare_exact_terms(rag: RAG) -> None:
    # An exact identifier from the llama2.c README, which embeddings rank poorly.
    hits = rag.retrieve("run.c stories15M.bin", k=3, retrieval_mode="lexical")
    assert hits and Path(hits[0].source).name == "llama2c_README.md"
    assert "stories15M" in hits[0].text or "run.c" in hits[0].text


def test_hybrid_scores_carry_the_dense_cosine(rag: RAG) -> None:
    hits = rag.retrieve("What did the president say about Ukraine?", k=4, retrieval_mode="hybrid")
    assert Path(hits[0].source).name == "state_of_the_union.txt"
    assert all(h.similarity is not None and -1.0 <= h.similarity <= 1.0 for h in hits)


def test_questions_with_fts_syntax_never_fail(rag: RAG) -> None:
    for q in ['"unbalanced', "NEAR(a b)", "AND OR NOT", "*", "-- ;", "what's up?"]:
        rag.retrieve(q, k=2, retrieval_mode="lexical")
    assert fts_query("  ?? ") is None
    assert fts_query('say "hi" OR bye') == '"say" OR "hi" OR "bye"'


def test_filters_restrict_source_type_and_pages(rag: RAG) -> None:
    q = "attention"
    pdf_only = rag.retrieve(q, k=8, filters=Filters(kinds=("pdf",)))
    assert pdf_only and all(h.source.endswith(".pdf") for h in pdf_only)
    md = rag.retrieve(q, k=5, filters=Filters(source_glob="*.md"))
    assert md and all(Path(h.source).name == "llama2c_README.md" for h in md)
    paged = rag.retrieve(q, k=6, filters=Filters(kinds=("pdf",), pages=(3, 4)))
    assert paged and all(h.page in (3, 4) for h in paged)
    none = rag.retrieve(q, k=3, filters=Filters(source_glob="*.docx"))
    assert none == []


def test_mmr_diversifies(rag: RAG) -> None:
    q = "the Transformer model architecture"
    plain = rag.retrieve(q, k=5, retrieval_mode="dense")
    diverse = rag.retrieve(q, k=5, retrieval_mode="dense", mmr=True, mmr_lambda=0.3)
    assert len(diverse) == 5
    assert diverse[0].chunk_id == plain[0].chunk_id  # the most relevant passage stays first

    def redundancy(hits: list) -> float:
        import numpy as np

        v = rag.store.vectors([h.chunk_id for h in hits])
        sim = v @ v.T
        return float((sim.sum() - np.trace(sim)) / (len(hits) * (len(hits) - 1)))

    assert redundancy(diverse) < redundancy(plain)


@pytest.mark.parametrize("mode", ["lexical", "hybrid", "dense"])
def test_mmr_with_lambda_one_keeps_the_modes_own_order(rag: RAG, mode: str) -> None:
    """lambda = 1 is pure relevance, and relevance is the mode's own score: MMR must then return
    exactly the ranking of the mode (it used to re-rank lexical and hybrid by dense cosine)."""
    for q in ["run.c stories15M.bin", "multi-head attention heads", "Ukraine sanctions"]:
        plain = rag.retrieve(q, k=6, retrieval_mode=mode)
        mmr = rag.retrieve(q, k=6, retrieval_mode=mode, mmr=True, mmr_lambda=1.0)
        assert len(plain) == 6
        assert [h.chunk_id for h in mmr] == [h.chunk_id for h in plain], q


def test_fusion_functions() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(2, 12.0), (3, 11.0), (4, 1.0)]
    convex = convex_fusion(dense, lexical, alpha=0.5)
    assert {i for i, _ in convex} == {1, 2, 3, 4}
    assert convex[0][0] == 2
    assert convex_fusion(dense, [], 0.5)[0][0] == 1


def test_cross_encoder_reranking_reorders_candidates(rag: RAG) -> None:
    """No cross-encoder ships offline, so the embedder's own BERT weights are loaded as one: its
    classification head is untrained, which makes the order arbitrary but real. What is tested is
    the plumbing: candidates are rescored by the cross-encoder and returned in its order."""
    from rag.retrieval.embeddings import resolve_embedder
    from rag.retrieval.reranking import load_reranker

    path = resolve_embedder("default")
    q = "multi-head attention"
    hits = rag.retrieve(q, k=5, reranker=path, rerank_candidates=10)
    assert len(hits) == 5
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = load_reranker(path, None).scores(q, [h.text for h in hits])
    assert scores == pytest.approx(expected, rel=1e-4)


def _other_copy(source: str) -> str:
    return {ESSAY: ESSAY_CRLF, ESSAY_CRLF: ESSAY}[Path(source).name]


@pytest.mark.slow
@pytest.mark.parametrize("fetch_k", [None, 4])
@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_copies_of_a_passage_come_once_with_every_source(
    text_rag: RAG, mode: str, fetch_k: int | None
) -> None:
    """Copies are collapsed and the next distinct passages take their places, searching deeper
    than ``fetch_k`` when the first candidates were copies of each other."""
    hits = text_rag.retrieve(ESSAY_QUESTION, k=4, retrieval_mode=mode, fetch_k=fetch_k)
    assert len(hits) == 4
    assert len({" ".join(h.text.split()) for h in hits}) == 4, [h.chunk_id for h in hits]
    essay = [h for h in hits if Path(h.source).name in (ESSAY, ESSAY_CRLF)]
    assert essay
    for h in essay:
        assert [Path(a.source).name for a in h.also_in] == [_other_copy(h.source)]
        assert all(a.page is None for a in h.also_in)
    others = [h for h in hits if h not in essay]
    assert all(h.also_in == [] for h in others)


@pytest.mark.slow
def test_the_prompt_holds_four_distinct_passages(text_rag: RAG) -> None:
    """Asked with the real embedded model: the four passages in the prompt are four texts, and
    the answer's JSON (what ``rag ask --json`` prints) names the other copy of the essay."""
    answer = text_rag.ask(ESSAY_QUESTION, top_k=4, max_tokens=16)
    assert len(answer.passages) == 4
    assert len({" ".join(p.text.split()) for p in answer.passages}) == 4
    data = answer.model_dump(mode="json")
    essay = [p for p in data["passages"] if Path(p["source"]).name in (ESSAY, ESSAY_CRLF)]
    assert essay
    for p in essay:
        assert [Path(a["source"]).name for a in p["also_in"]] == [_other_copy(p["source"])]


@pytest.mark.slow
def test_cli_sources_name_the_other_copy(
    text_rag: RAG,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rag.cli import main

    monkeypatch.chdir(tmp_path)  # no rag.toml of the caller's
    index = str(text_rag.store.index_dir)
    argv = ["ask", ESSAY_QUESTION, "--index", index, "-k", "4", "--max-tokens", "16"]
    assert main([*argv, "--no-stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    copies = [line.strip() for line in lines if line.strip().startswith("also in: ")]
    assert copies and all(
        Path(c.removeprefix("also in: ")).name in (ESSAY, ESSAY_CRLF) for c in copies
    )
    assert main([*argv, "--json"]) == 0
    passages = json.loads(capsys.readouterr().out)["passages"]
    assert any(p["also_in"] for p in passages)
