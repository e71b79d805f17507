"""Chunking invariants on every real document and on random text, with the real token counters.

For each chunk: ``page_text[start:end] == text``; at most ``chunk_tokens`` tokens of the answering
model's tokenizer and at most the embedder's own limit in its word pieces; never across a page.
Together the chunks of a page cover every non-whitespace character of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ingest.chunking import Chunk, Chunker, ChunkLimits
from ingest.loaders import SUPPORTED_SUFFIXES, LoadedFile, Page, load
from rag.config import Settings
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS, NO_TEXT_PDF

# Every real document with text: all text and markdown files and all PDFs but the scanned one.
REAL_DOCS = sorted(
    p
    for p in DOCUMENTS.rglob("*")
    if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and p != NO_TEXT_PDF
)
DOC_IDS = [p.name for p in REAL_DOCS]


@pytest.fixture(scope="module")
def loaded_docs() -> dict[str, LoadedFile]:
    return {p.name: load(p, p.read_bytes()) for p in REAL_DOCS}


@pytest.fixture(scope="module", params=["default", "tight"])
def chunker(
    request: pytest.FixtureRequest, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> Chunker:
    """The production limits, and tight ones under which both limits bind, with overlap."""
    if request.param == "default":
        limits = ChunkLimits(settings.chunk_tokens, settings.chunk_overlap, embedder.max_tokens)
    else:
        limits = ChunkLimits(chunk_tokens=48, overlap_tokens=12, embed_tokens=32)
    return Chunker(limits, count_llm=tokenizer.count_many, count_embed=embedder.count_tokens)


def check_chunks(
    page: Page,
    chunks: Sequence[Chunk],
    limits: ChunkLimits,
    tokenizer: Tokenizer,
    embedder: Embedder,
) -> None:
    """Every invariant that one page's chunks must satisfy."""
    text = page.text
    assert limits.embed_tokens <= embedder.max_tokens
    texts = [c.text for c in chunks]
    llm_counts = tokenizer.count_many(texts) if texts else []
    embed_counts = embedder.count_tokens(texts) if texts else []
    covered = bytearray(len(text))
    for c, n_llm, n_embed in zip(chunks, llm_counts, embed_counts, strict=True):
        # Spans are exact and inside this page: a chunk never crosses a page.
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start : c.end] == c.text
        assert c.page == page.number
        assert c.page_label == page.label
        # Chunks are trimmed and never empty.
        assert c.text.strip() == c.text
        # Both token limits hold, counted by the real tokenizers.
        assert c.tokens == n_llm
        assert n_llm <= limits.chunk_tokens, (n_llm, c.text)
        assert n_embed <= limits.embed_tokens, (n_embed, c.text)
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    missed = [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
    assert not missed, f"{len(missed)} characters in no chunk, first at {missed[0]}: " + repr(
        text[max(0, missed[0] - 30) : missed[0] + 30]
    )
    # No chunk holds only text that the chunk before it already has.
    ends = [c.end for c in chunks]
    assert ends == sorted(set(ends))
    if limits.overlap_tokens == 0:
        for a, b in pairwise(chunks):
            assert a.end <= b.start


@pytest.mark.parametrize("name", DOC_IDS)
def test_real_documents(
    name: str,
    loaded_docs: dict[str, LoadedFile],
    chunker: Chunker,
    tokenizer: Tokenizer,
    embedder: Embedder,
) -> None:
    loaded = loaded_docs[name]
    limits = chunker.limits
    fill = []
    for page in loaded.pages:
        chunks = chunker.split(page)
        assert chunks, f"page {page.number} has text but no chunk"
        check_chunks(page, chunks, limits, tokenizer, embedder)
        embed_counts = embedder.count_tokens([c.text for c in chunks])
        fill += [
            max(c.tokens / limits.chunk_tokens, n / limits.embed_tokens)
            for c, n in zip(chunks, embed_counts, strict=True)
        ]
    # Chunks are not needlessly small: on average they fill over half of the binding limit.
    assert sum(fill) / len(fill) > 0.5


def test_the_real_documents_are_all_there() -> None:
    kinds = {p.suffix for p in REAL_DOCS}
    assert kinds == {".pdf", ".txt", ".md"}
    assert len([p for p in REAL_DOCS if p.suffix == ".pdf"]) == 4


@pytest.mark.parametrize("name", ["llama2c_README.md", "llamacpp_README.md"])
def test_markdown_chunks_carry_their_section(
    name: str, loaded_docs: dict[str, LoadedFile], chunker: Chunker
) -> None:
    page = loaded_docs[name].pages[0]
    assert len(page.headings) > 10
    chunks = chunker.split(page)
    offsets = {offset: title for offset, title in page.headings}
    for c in chunks:
        # The section is that of the last heading at or before the chunk's start.
        before = [title for offset, title in page.headings if offset <= c.start]
        assert c.section == (before[-1] if before else None)
        if c.start in offsets:
            assert c.section == offsets[c.start]
            assert c.text.startswith("#")
    starting = {c.start for c in chunks}
    assert sum(offset in starting for offset in offsets) >= len(offsets) * 0.6
    # When a chunk ends where a section ends, the next one starts at the heading: no text from
    # before a heading is carried into its section as overlap.
    for a, b in pairwise(chunks):
        for offset in offsets:
            if a.end <= offset and not page.text[a.end : offset].strip():
                assert b.start == offset


def test_plain_text_and_pdf_chunks_have_no_section(
    loaded_docs: dict[str, LoadedFile], chunker: Chunker
) -> None:
    for name in ("state_of_the_union.txt", "attention_is_all_you_need_neurips2017.pdf"):
        page = loaded_docs[name].pages[0]
        assert all(c.section is None for c in chunker.split(page))


def test_overlap_repeats_text_between_consecutive_chunks(
    loaded_docs: dict[str, LoadedFile], settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    limits = ChunkLimits(settings.chunk_tokens, settings.chunk_overlap, embedder.max_tokens)
    chunker = Chunker(limits, tokenizer.count_many, embedder.count_tokens)
    page = loaded_docs["state_of_the_union.txt"].pages[0]
    chunks = chunker.split(page)
    overlaps = [a.end - b.start for a, b in pairwise(chunks)]
    assert sum(o > 0 for o in overlaps) >= len(overlaps) // 2
    for a, b in pairwise(chunks):
        if b.start < a.end:
            shared = page.text[b.start : a.end]
            assert tokenizer.count(shared) <= limits.overlap_tokens + 2


def test_without_overlap_chunks_are_disjoint(
    loaded_docs: dict[str, LoadedFile], tokenizer: Tokenizer, embedder: Embedder
) -> None:
    limits = ChunkLimits(chunk_tokens=48, overlap_tokens=0, embed_tokens=32)
    chunker = Chunker(limits, tokenizer.count_many, embedder.count_tokens)
    for name in ("llama2c_README.md", "zh_broker_report_xinxiwang_000876.pdf"):
        for page in loaded_docs[name].pages:
            chunks = chunker.split(page)
            check_chunks(page, chunks, limits, tokenizer, embedder)
            assert all(a.end <= b.start for a, b in pairwise(chunks))


def test_whitespace_only_page_gives_no_chunk(chunker: Chunker) -> None:
    assert chunker.split(Page(text=" \n\n\t  \n", number=3)) == []


def test_long_unbroken_runs_are_cut(
    chunker: Chunker, tokenizer: Tokenizer, embedder: Embedder
) -> None:
    """A long URL and CJK text without punctuation are cut at characters, within the limits."""
    url = "https://example.com/" + "a1b2c3d4e5" * 300
    cjk = "新希望六和股份有限公司饲料业务" * 80
    text = f"Intro sentence. {url}\n{cjk}\nThe end."
    page = Page(text=text, number=1)
    chunks = chunker.split(page)
    check_chunks(page, chunks, chunker.limits, tokenizer, embedder)
    for run in (url, cjk):
        start = text.index(run)
        end = start + len(run)
        inside = [c for c in chunks if c.start < end and c.end > start]
        assert len(inside) >= 3


# --- property test on random text ---

_WORDS = ["the", "model", "attention", "token", "Llama", "2,048", "x", "résumé", "naïve", "ß"]
_pieces = st.one_of(
    st.text(max_size=40),  # any Unicode, control characters included
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/:._-", min_size=50, max_size=900),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=400),
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=80).map(" ".join),
    st.sampled_from(["\n", "\n\n", ". ", "。", "！", "? ", "; ", " ", "\t", "\u3000", "\r\n"]),
    st.just("\n# Heading\n"),
)
_random_text = st.lists(_pieces, max_size=14).map("".join)
_HEADING_LINE = re.compile(r"^# Heading$", re.MULTILINE)


@hypothesis_settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_random_text, overlap=st.integers(min_value=0, max_value=10))
def test_random_text_round_trips_within_limits(
    text: str, overlap: int, tokenizer: Tokenizer, embedder: Embedder
) -> None:
    limits = ChunkLimits(chunk_tokens=24, overlap_tokens=overlap, embed_tokens=20)
    chunker = Chunker(limits, tokenizer.count_many, embedder.count_tokens)
    headings = [(m.start(), "Heading") for m in _HEADING_LINE.finditer(text)]
    page = Page(text=text, number=7, label="vii", headings=headings)
    chunks = chunker.split(page)
    assert bool(chunks) == bool(text.strip())
    check_chunks(page, chunks, limits, tokenizer, embedder)
    for c in chunks:
        assert c.section == ("Heading" if any(o <= c.start for o, _ in headings) else None)
