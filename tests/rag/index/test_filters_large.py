"""Filters on an index larger than SQLite's limit of bound variables (32,766 by default).

The index holds more than 40,000 chunks made of real sentences (BEIR SciFact abstracts) and is
written directly through ``open_writer``: the embedder is not the subject here, so the chunk
vectors are random unit vectors, except those of the chunks the filter excludes, which are made
the nearest to the question on purpose, so that a filter that leaks would show.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag import RAG, Filters
from rag.config import Settings
from rag.index.docstore import NewChunk
from rag.index.manifest import Manifest
from rag.index.reader import Store
from rag.index.writer import open_writer
from rag.retrieval.embeddings import Embedder
from tests.conftest import SHARED_DATA

CORPUS = SHARED_DATA / "scifact" / "derived_beir_style" / "corpus.jsonl.gz"
MARK = "zyxqu"  # a made-up word that only the excluded chunks hold
QUESTION = f"{MARK} white matter development in preterm infants"
PARTS = 10  # PDF documents the sentences are spread over
PER_PAGE = 40
SQLITE_DEFAULT_VARIABLES = 32_766
EXCLUDED = 2_000  # chunks of one text file, which the filters below exclude
# Building the index takes about 15 s on two cores.
pytestmark = pytest.mark.slow

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]%][.!?])\s*(?=[A-Z])")


def _sentences() -> list[str]:
    out: dict[str, None] = {}
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            for s in _SENTENCE_END.split(json.loads(line)["text"]):
                if len(s) > 20:
                    out.setdefault(s.strip(), None)
    return list(out)


def _chunks(texts: list[str], per_page: int | None) -> list[NewChunk]:
    return [
        NewChunk(
            text=t,
            page=None if per_page is None else 1 + i // per_page,
            page_label=None,
            section=None,
            start=0,
            end=len(t),
            tokens=len(t.split()),
        )
        for i, t in enumerate(texts)
    ]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def large(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, embedder: Embedder
) -> Iterator[RAG]:
    sentences = _sentences()
    assert len(sentences) > 40_000
    rng = np.random.default_rng(8)
    dim = embedder.dimension
    qvec = embedder.embed_query(QUESTION)
    manifest = Manifest(
        embedder=embedder.name,
        dimension=dim,
        tokenizer="whitespace",
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
    )
    index = tmp_path_factory.mktemp("large") / "idx"
    with open_writer(index, manifest) as w:
        for n, part in enumerate(np.array_split(np.array(sentences, dtype=object), PARTS)):
            texts = [str(t) for t in part]
            w.add_document(
                source=f"/corpus/scifact-part-{n}.pdf",
                sha256=hashlib.sha256(str(n).encode()).hexdigest(),
                kind="pdf",
                size=sum(map(len, texts)),
                pages=1 + len(texts) // PER_PAGE,
                title=None,
                chunks=_chunks(texts, PER_PAGE),
                vectors=_unit(rng.standard_normal((len(texts), dim))),
            )
        # Near copies of the question: unfiltered, these chunks rank first in every mode.
        notes = [f"{MARK} {s}" for s in sentences[:EXCLUDED]]
        near = qvec + 0.05 * _unit(rng.standard_normal((EXCLUDED, dim)))
        w.add_document(
            source="/corpus/notes.txt",
            sha256=hashlib.sha256(b"notes").hexdigest(),
            kind="text",
            size=sum(map(len, notes)),
            pages=1,
            title=None,
            chunks=_chunks(notes, None),
            vectors=_unit(near),
        )
        w.commit()
    with RAG.open(index, settings, embedder=embedder) as rag:
        # Debian's SQLite allows 250,000 variables where default builds allow 32,766: pin the
        # default, so that what is tested holds on every build.
        for seg in rag.store.segments:
            seg.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_VARIABLES)
        yield rag


PDF_FILTERS = [
    Filters(kinds=("pdf",)),
    Filters(source_glob="*.pdf"),
    Filters(source_glob="/corpus/scifact-*", kinds=("pdf", "docx")),
]


def test_the_filters_match_more_than_40000_chunks(large: RAG) -> None:
    store: Store = large.store
    total = store.counts()[1]
    for f in PDF_FILTERS:
        matching = store.filter_ids(source_glob=f.source_glob, kinds=f.kinds, pages=f.pages)
        assert len(matching) == total - EXCLUDED > 40_000


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_unfiltered_retrieval_prefers_the_excluded_chunks(large: RAG, mode: str) -> None:
    """The control: unfiltered, the excluded chunks win, so the filtered tests mean something."""
    hits = large.retrieve(QUESTION, k=10, retrieval_mode=mode)
    excluded = [h for h in hits if h.source == "/corpus/notes.txt"]
    assert hits[0] in excluded and len(excluded) >= 5


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
@pytest.mark.parametrize("filters", PDF_FILTERS, ids=["kind", "glob", "glob+kinds"])
def test_filters_matching_over_40000_chunks_work_in_every_mode(
    large: RAG, mode: str, filters: Filters
) -> None:
    hits = large.retrieve(QUESTION, k=10, retrieval_mode=mode, filters=filters)
    assert len(hits) == 10
    assert all(Path(h.source).suffix == ".pdf" for h in hits), [h.source for h in hits]
    if mode == "lexical":  # BM25 finds the sentences about the question's words
        assert "white matter" in hits[0].text.lower()
    # MMR reads the same filtered candidates.
    diverse = large.retrieve(QUESTION, k=5, retrieval_mode=mode, filters=filters, mmr=True)
    assert len(diverse) == 5 and all(Path(h.source).suffix == ".pdf" for h in diverse)


def test_page_filters_and_filters_matching_nothing(large: RAG) -> None:
    for mode in ("dense", "lexical", "hybrid"):
        paged = large.retrieve(
            QUESTION, k=8, retrieval_mode=mode, filters=Filters(kinds=("pdf",), pages=(2, 30))
        )
        assert len(paged) == 8 and all(h.page is not None and 2 <= h.page <= 30 for h in paged)
        assert large.retrieve(QUESTION, k=3, filters=Filters(source_glob="*.docx")) == []


def test_dense_filters_read_the_matching_chunks_once_per_filter(large: RAG) -> None:
    """The store reads one immutable snapshot, so the chunks a filter matches are read once and
    not on every query (which cost a 40,000-row read per question)."""
    statements: list[str] = []
    filters = Filters(source_glob="scifact-part-*.pdf")
    large.retrieve(QUESTION, k=3, retrieval_mode="dense", filters=filters)
    for seg in large.store.segments:
        seg.db.set_trace_callback(statements.append)
    try:
        for _ in range(3):
            hits = large.retrieve(QUESTION, k=3, retrieval_mode="dense", filters=filters)
            assert len(hits) == 3 and all(h.source.endswith(".pdf") for h in hits)
    finally:
        for seg in large.store.segments:
            seg.db.set_trace_callback(None)
    assert statements  # the passages themselves are still read
    assert not [s for s in statements if s.startswith("SELECT c.id FROM chunks")], statements
