"""Citations point at the right physical page of a real PDF.

The facts checked come from the printed Llama 2 paper (arXiv 2307.09288), not from our extraction:
page 2 holds the table of contents, page 3 Figure 1 (helpfulness human evaluation), page 4
Figure 3 (safety human evaluation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ingest
from rag import RAG, Filters
from rag.config import Settings
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS

LLAMA2_PDF = DOCUMENTS / "pdf" / "llama2_paper_first4pages.pdf"


@pytest.fixture(scope="module")
def llama2_rag(
    tmp_path_factory: pytest.TempPathFactory,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> RAG:
    index = tmp_path_factory.mktemp("llama2") / "idx"
    ingest([LLAMA2_PDF], index, settings, embedder=embedder, tokenizer=tokenizer)
    return RAG.open(index, settings, embedder=embedder)


@pytest.mark.parametrize(
    ("question", "page", "phrase"),
    [
        ("Contents: Introduction, Pretraining, Fine-tuning, Safety", 2, "Contents"),
        ("Helpfulness human evaluation results compared to other models", 3, "Helpfulness human"),
        ("Safety human evaluation results", 4, "Safety human evaluation"),
    ],
)
def test_passage_is_cited_with_its_printed_page(
    llama2_rag: RAG, question: str, page: int, phrase: str
) -> None:
    hits = llama2_rag.retrieve(question, k=3)
    best = next(h for h in hits if phrase in h.text)
    assert best.page == page
    assert best.page_label == str(page)
    assert Path(best.source).name == LLAMA2_PDF.name


def test_no_nul_characters_from_unmapped_glyphs(llama2_rag: RAG) -> None:
    hits = llama2_rag.retrieve("Open Foundation and Fine-Tuned Chat Models", k=2)
    assert hits and all("\x00" not in h.text for h in hits)


def test_page_filter_keeps_to_the_page(llama2_rag: RAG) -> None:
    hits = llama2_rag.retrieve("human evaluation", k=5, filters=Filters(pages=(4, 4)))
    assert hits and {h.page for h in hits} == {4}
