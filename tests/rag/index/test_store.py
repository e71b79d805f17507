"""The index directory: real FAISS vectors, a real SQLite document store, a JSON manifest.

Read-only checks use the session's ``built_index`` (real documents, real embedder); write checks
build small stores in ``tmp_path`` with vectors whose nearest neighbours are known.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from pypdf import PdfReader

from ingest import IngestReport
from ingest.loaders import load
from rag.config import Settings
from rag.errors import IndexCorrupt, IndexLocked, IndexMismatch, IndexNotFound
from rag.index.docstore import NewChunk
from rag.index.manifest import INDEX_TYPE, SCHEMA_VERSION, Manifest
from rag.index.reader import Store
from rag.index.writer import StoreWriter, open_writer
from rag.llm.tokens import tokenizer_name
from rag.retrieval.embeddings import Embedder, resolve_quantize, split_quantization

DIM = 16


def _all_ids(store: Store) -> list[int]:
    records = store.chunks(list(range(1, 20 * store.counts()[1] + 100)))
    return [r.id for r in records]


# --- the real index built from real documents ---


def test_manifest_records_provenance(
    built_index: tuple[Path, IngestReport], settings: Settings, embedder: Embedder
) -> None:
    index, report = built_index
    with Store.open(index) as store:
        m = store.manifest
        on_disk = json.loads((store.snapshot / "manifest.json").read_text(encoding="utf-8"))
    assert m.embedder == embedder.name
    assert split_quantization(m.embedder) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        resolve_quantize(settings),
    )
    assert m.dimension == embedder.dimension == 384
    assert m.normalized is True
    assert m.tokenizer == tokenizer_name(settings)
    assert m.chunk_tokens == settings.chunk_tokens
    assert m.chunk_overlap == settings.chunk_overlap
    assert m.index_type == INDEX_TYPE == "segments"
    assert [(s.chunks, s.deleted_documents, s.vectors.kind) for s in m.segments] == [
        (report.chunks_total, [], "flat")
    ]
    assert m.schema_version == SCHEMA_VERSION
    assert (m.documents, m.chunks) == (report.documents_total, report.chunks_total)
    for name in ("rag-toolkit", "faiss-cpu", "sentence-transformers", "transformers", "pypdf"):
        assert m.versions[name] == metadata.version(name)
    created = dt.datetime.fromisoformat(m.created_at)
    assert created.tzinfo is not None
    assert dt.datetime.fromisoformat(m.updated_at) >= created
    assert Manifest.model_validate(on_disk) == m


def test_documents_of_the_real_index(
    built_index: tuple[Path, IngestReport], small_corpus: Path
) -> None:
    index, report = built_index
    with Store.open(index) as store:
        docs = store.documents()
        n_docs, n_chunks = store.counts()
    files = sorted(p.resolve() for p in small_corpus.iterdir())
    assert [Path(d.source) for d in docs] == files  # ordered by source
    by_name = {Path(d.source).name: d for d in docs}
    pdf = by_name["attention_is_all_you_need_neurips2017.pdf"]
    assert (pdf.kind, pdf.pages) == ("pdf", len(PdfReader(Path(pdf.source)).pages))
    assert (by_name["llama2c_README.md"].kind, by_name["llama2c_README.md"].pages) == (
        "markdown",
        1,
    )
    assert by_name["state_of_the_union.txt"].kind == "text"
    for d in docs:
        assert d.sha256 == hashlib.sha256(Path(d.source).read_bytes()).hexdigest()
        assert d.chunks > 0
    assert n_docs == len(files) == report.documents_total
    assert sum(d.chunks for d in docs) == n_chunks == report.chunks_total


def test_chunks_keep_text_page_and_span(built_index: tuple[Path, IngestReport]) -> None:
    index, _ = built_index
    with Store.open(index) as store:
        ids = _all_ids(store)
        records = store.chunks(ids)
        assert len(ids) == store.counts()[1] == store.ntotal
        # In the order asked for; unknown ids left out.
        assert store.chunks([ids[5], ids[0], 10**9, ids[2]]) == [
            records[5],
            records[0],
            records[2],
        ]
        assert store.chunks([]) == []
    pages: dict[str, dict[int | None, str]] = {}
    for r in records:
        if r.source not in pages:
            loaded = load(Path(r.source), Path(r.source).read_bytes())
            pages[r.source] = {p.number: p.text for p in loaded.pages}
        text = pages[r.source][r.page]
        assert text[r.start : r.end] == r.text
        if r.source.endswith(".pdf"):
            assert r.page is not None and r.page >= 1
            assert r.page_label == str(r.page)
            assert r.section is None
        else:
            assert r.page is None and r.page_label is None
    pdf_pages = {r.page for r in records if r.source.endswith(".pdf")}
    assert pdf_pages == set(range(1, 12))
    sections = {r.section for r in records if r.source.endswith(".md")}
    assert {"llama2.c", "training", "License"} <= sections


def test_vector_search_returns_the_right_chunk_ids(
    built_index: tuple[Path, IngestReport], embedder: Embedder
) -> None:
    index, _ = built_index
    with Store.open(index) as store:
        ids = _all_ids(store)
        picked = store.chunks(ids[:: max(1, len(ids) // 6)])
        vectors = embedder.embed([r.text for r in picked])
        for r, v in zip(picked, vectors, strict=True):
            hits = store.search(v, 3)
            assert hits[0][0] == r.id
            assert hits[0][1] == pytest.approx(1.0, abs=1e-3)
            assert hits[0][1] >= hits[1][1] >= hits[2][1]
        assert len(store.search(vectors[0], store.ntotal + 10)) == store.ntotal


def test_index_directory_holds_no_pickle(built_index: tuple[Path, IngestReport]) -> None:
    index, _ = built_index
    files = sorted(p for p in index.rglob("*") if p.is_file())
    rel = [p.relative_to(index) for p in files]
    snapshots = {p.parts[0] for p in rel if p.parts[0].startswith("snap-")}
    assert len(snapshots) == 1
    snap = snapshots.pop()
    assert {p for p in rel if p.parts[0] != "segments"} == {
        Path("CURRENT"),
        Path(".lock"),
        Path(snap, "manifest.json"),
    }
    segments = {p.parts[1] for p in rel if p.parts[0] == "segments"}
    assert len(segments) == 1
    seg = Path("segments", segments.pop())
    assert {p for p in rel if p.parts[0] == "segments" and p.parent == seg} == {
        seg / "rows.sqlite",
        seg / "ids.npy",
        seg / "vectors.npy",
    }
    assert [p for p in rel if p.parts[0] == "segments" and p.parent != seg] == [
        p for p in rel if p.parts[:3] == (*seg.parts, "lexical")
    ]
    assert not [p for p in index.rglob("*") if p.suffix in (".pkl", ".pickle")]
    heads = {str(r): p.read_bytes()[:16] for r, p in zip(rel, files, strict=True)}
    for name, head in heads.items():
        assert not head.startswith(b"\x80"), f"{name} starts like a pickle"
    # NumPy arrays of numbers, read with allow_pickle=False (np.load's default).
    for name in ("ids.npy", "vectors.npy"):
        assert heads[f"{seg}/{name}"].startswith(b"\x93NUMPY")
        assert np.load(index / seg / name, allow_pickle=False).dtype.kind in "if"
    assert heads[f"{seg}/rows.sqlite"].startswith(b"SQLite format 3\x00")
    assert heads[f"{snap}/manifest.json"].startswith(b"{")
    assert (index / "CURRENT").read_text(encoding="utf-8") == snap + "\n"


# --- small stores with known vectors ---


def _manifest(**kw: object) -> Manifest:
    fields: dict[str, object] = {
        "embedder": "test-embedder",
        "dimension": DIM,
        "tokenizer": "test-tokenizer",
        "chunk_tokens": 64,
        "chunk_overlap": 8,
    }
    return Manifest.model_validate(fields | kw)


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _add(writer: StoreWriter, source: str, n: int, seed: int, kind: str = "text") -> np.ndarray:
    vectors = _vectors(n, seed)
    chunks = [
        NewChunk(
            text=f"{source} chunk {i}: naïve 中文 text",
            page=i + 1 if kind == "pdf" else None,
            page_label=f"p{i + 1}" if kind == "pdf" else None,
            section=f"Section {i}" if kind == "markdown" else None,
            start=10 * i,
            end=10 * i + 9,
            tokens=9,
        )
        for i in range(n)
    ]
    writer.add_document(
        source=source,
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        kind=kind,
        size=100 * n,
        pages=n,
        title=None,
        chunks=chunks,
        vectors=vectors,
    )
    return vectors


def _ids_of(store: Store, source: str) -> list[int]:
    return [r.id for r in store.chunks(_all_ids(store)) if r.source == source]


def test_round_trip_of_vectors_chunks_and_documents(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        va = _add(w, "/docs/a.pdf", 5, seed=1, kind="pdf")
        vb = _add(w, "/docs/b.md", 3, seed=2, kind="markdown")
        snap = w.commit()
    with Store.open(index) as store:
        assert store.snapshot == snap
        assert store.counts() == (2, 8)
        assert store.ntotal == 8
        assert (store.manifest.documents, store.manifest.chunks) == (2, 8)
        a_ids, b_ids = _ids_of(store, "/docs/a.pdf"), _ids_of(store, "/docs/b.md")
        assert len(a_ids) == 5 and len(b_ids) == 3
        for ids, vectors in ((a_ids, va), (b_ids, vb)):
            for cid, v in zip(ids, vectors, strict=True):
                (top, score), *_ = store.search(v, 4)
                assert top == cid
                assert score == pytest.approx(1.0, abs=1e-5)
        a2 = store.chunks([a_ids[2]])[0]
        assert (a2.text, a2.page, a2.page_label, a2.section) == (
            "/docs/a.pdf chunk 2: naïve 中文 text",
            3,
            "p3",
            None,
        )
        assert (a2.start, a2.end) == (20, 29)
        assert store.chunks([b_ids[1]])[0].section == "Section 1"
        docs = store.documents()
        assert [(d.source, d.kind, d.pages, d.chunks) for d in docs] == [
            ("/docs/a.pdf", "pdf", 5, 5),
            ("/docs/b.md", "markdown", 3, 3),
        ]
        assert docs[0].sha256 == hashlib.sha256(b"/docs/a.pdf").hexdigest()


def test_deleted_documents_leave_no_vectors_and_ids_are_not_reused(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        va = _add(w, "/docs/a.txt", 4, seed=1)
        _add(w, "/docs/b.txt", 2, seed=2)
        w.commit()
    with Store.open(index) as store:
        old_ids = _all_ids(store)
        a_ids = _ids_of(store, "/docs/a.txt")
    with open_writer(index, _manifest()) as w:
        rec = w.find_source("/docs/a.txt")
        assert rec is not None and rec.chunks == 4
        assert w.delete_document(rec.id) == 4
        assert w.find_source("/docs/a.txt") is None
        _add(w, "/docs/c.txt", 3, seed=3)
        w.commit()
    with Store.open(index) as store:
        assert store.counts() == (2, 5)
        assert store.ntotal == 5
        assert store.chunks(a_ids) == []
        for v in va:
            assert not {cid for cid, _ in store.search(v, 5)} & set(a_ids)
        assert min(_ids_of(store, "/docs/c.txt")) > max(old_ids)


def test_current_is_replaced_atomically_and_open_stores_keep_their_snapshot(
    tmp_path: Path,
) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        va = _add(w, "/docs/a.txt", 3, seed=1)
        first = w.commit()
    old = Store.open(index)
    try:
        old_ids = _all_ids(old)
        with open_writer(index, _manifest()) as w:
            _add(w, "/docs/b.txt", 2, seed=2)
            second = w.commit()
        assert second != first
        assert (index / "CURRENT").read_text(encoding="utf-8") == second.name + "\n"
        assert not list(index.glob(".CURRENT*")) and not list(index.glob(".tmp-snap-*"))
        # The open store still reads the snapshot it opened, whole; a new one sees the new one.
        assert old.snapshot == first and first.is_dir()
        assert old.counts() == (1, 3)
        assert old.search(va[0], 1)[0][0] == old_ids[0]
        with Store.open(index) as new:
            assert new.snapshot == second
            assert new.counts() == (2, 5)

        # A third commit removes the first snapshot's directory; the open store reads on.
        with open_writer(index, _manifest()) as w:
            _add(w, "/docs/c.txt", 1, seed=3)
            third = w.commit()
        assert not first.exists() and second.is_dir() and third.is_dir()
        assert old.counts() == (1, 3)
        assert [r.id for r in old.chunks(old_ids)] == old_ids
        assert old.search(va[1], 1)[0][0] == old_ids[1]
    finally:
        old.close()


def test_an_uncommitted_writer_publishes_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        _add(w, "/docs/a.txt", 3, seed=1)
        w.commit()
    with pytest.raises(RuntimeError, match="boom"), open_writer(index, _manifest()) as w:
        _add(w, "/docs/b.txt", 2, seed=2)
        raise RuntimeError("boom")
    assert not list(index.glob(".tmp-snap-*"))
    with Store.open(index) as store:
        assert store.counts() == (1, 3)


def test_open_missing_index_names_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "index"
    with pytest.raises(IndexNotFound, match="rag ingest") as info:
        Store.open(missing)
    assert str(missing) in str(info.value)
    assert info.value.exit_code == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IndexNotFound, match="rag ingest"):
        Store.open(empty)
    assert not missing.exists()


def test_current_naming_no_snapshot_is_corrupt(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    index.mkdir()
    (index / "CURRENT").write_text("snap-000042\n", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="rag ingest"):
        Store.open(index)
    (index / "CURRENT").write_text("../../etc\n", encoding="utf-8")
    with pytest.raises(IndexCorrupt):
        Store.open(index)


def test_writer_refuses_other_build_parameters(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        _add(w, "/docs/a.txt", 1, seed=1)
        w.commit()
    for change in ({"dimension": DIM * 2}, {"embedder": "other"}, {"chunk_overlap": 0}):
        with (
            pytest.raises(IndexMismatch, match=next(iter(change))),
            open_writer(index, _manifest(**change)),
        ):
            pass
    # Counts and timestamps are not build parameters.
    with open_writer(index, _manifest(documents=7, chunks=9)):
        pass


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with (
        open_writer(index, _manifest()),
        pytest.raises(IndexLocked, match="pid"),
        open_writer(index, _manifest()),
    ):
        pass
    with open_writer(index, _manifest()) as w:  # released
        _add(w, "/docs/a.txt", 1, seed=1)
        w.commit()


def test_commit_of_an_empty_new_index(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    with open_writer(index, _manifest()) as w:
        w.commit()
    with Store.open(index) as store:
        assert store.counts() == (0, 0)
        assert store.search(_vectors(1, 0)[0], 3) == []
