"""Retrieval modes, filters and MMR on a real index (real embedder, FAISS, SQLite FTS5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG
from rag.config import Settings
from rag.embeddings import Embedder
from rag.fusion import convex_fusion, reciprocal_rank_fusion
from rag.lexical import fts_query
from rag.retrieval import Filters


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
    assert all(h.dense_score is not None and -1.0 <= h.dense_score <= 1.0 for h in hits)


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


def test_fusion_functions() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(2, 12.0), (3, 11.0), (4, 1.0)]
    rrf = reciprocal_rank_fusion([dense, lexical])
    assert rrf[0][0] == 2  # ranked well by both
    convex = convex_fusion(dense, lexical, alpha=0.5)
    assert {i for i, _ in convex} == {1, 2, 3, 4}
    assert convex[0][0] == 2
    assert convex_fusion(dense, [], 0.5)[0][0] == 1


def test_cross_encoder_reranking_reorders_candidates(rag: RAG) -> None:
    """No cross-encoder ships offline, so the embedder's own BERT weights are loaded as one: its
    classification head is untrained, which makes the order arbitrary but real. What is tested is
    the plumbing: candidates are rescored by the cross-encoder and returned in its order."""
    from rag.embeddings import resolve_embedder
    from rag.reranking import load_reranker

    path = resolve_embedder("default")
    q = "multi-head attention"
    hits = rag.retrieve(q, k=5, reranker=path, rerank_candidates=10)
    assert len(hits) == 5
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = load_reranker(path, None).scores(q, [h.text for h in hits])
    assert scores == pytest.approx(expected, rel=1e-4)
