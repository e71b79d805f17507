"""An index of schema 2, written by the code before segments (``tests/data/index-schema2``, see
``tests/data/make_index_schema2.md``), is read as it is and converted on its next write, with
its document and chunk ids and its vectors, without embedding anything again.

Every test works on a copy in ``tmp_path``; the checked-in files are only read. What the old
index holds is read with plain sqlite3 and FAISS, not with the code under test.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ingest import ingest
from rag import RAG
from rag.cli import main
from rag.config import Settings
from rag.errors import IndexMismatch
from rag.index.docstore import NewChunk
from rag.index.filters import Filters
from rag.index.manifest import read_manifest
from rag.index.reader import Store
from rag.index.snapshots import current_snapshot
from rag.index.vectors import faiss_module
from rag.index.verify import verify
from rag.index.writer import open_writer
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "index-schema2"
OLD_SNAPSHOT = "snap-000002"

SOTU, PDF, ESSAY = (
    "a_state_of_the_union_excerpt.txt",
    "c_llama2_paper_first4pages.pdf",
    "d_paul_graham_essay_excerpt.txt",
)
# Chunk ids by document in the old index; document 2 (chunks 5-9) was deleted before it was saved.
OLD_IDS = {1: range(1, 5), 3: range(10, 33), 4: range(33, 35)}
OLD_CHUNK_IDS = [i for ids in OLD_IDS.values() for i in ids]
DELETED_CHUNK_IDS = list(range(5, 10))
MAX_CHUNK_ID = 34  # meta.max_chunk_id

LLAMA_QUESTION = "pretrained and fine-tuned large language models from 7 to 70 billion parameters"


# --- what the old index holds, read without rag.index ---


def _old_rows(snapshot: Path) -> dict[int, tuple[object, ...]]:
    """chunk id -> (document id, source, page, page_label, section, start, end, text)."""
    db = sqlite3.connect(f"file:{snapshot / 'docstore.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT c.id, d.id, d.source, c.page, c.page_label, c.section, c.start, c.end, c.text "
            "FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.id"
        ).fetchall()
    finally:
        db.close()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def _old_vectors(snapshot: Path) -> dict[int, np.ndarray]:
    faiss = faiss_module()
    index = faiss.read_index(str(snapshot / "vectors.faiss"))
    ids = faiss.vector_to_array(index.id_map)
    return {int(i): index.reconstruct(int(i)) for i in ids}


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A private copy of the schema-2 index."""
    index = tmp_path / "idx"
    shutil.copytree(FIXTURE, index)
    return index


@pytest.fixture(scope="module")
def embedder(float_embedder: Embedder) -> Embedder:
    """The schema-2 index was built in float, before int8 became the CPU default."""
    return float_embedder


@pytest.fixture(scope="module")
def old_rows() -> dict[int, tuple[object, ...]]:
    return _old_rows(FIXTURE / OLD_SNAPSHOT)


@pytest.fixture(scope="module")
def old_vectors() -> dict[int, np.ndarray]:
    return _old_vectors(FIXTURE / OLD_SNAPSHOT)


def _name(source: object) -> str:
    return Path(str(source)).name


def _assert_old_chunks_kept(
    store: Store,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
    ids: list[int],
) -> None:
    """The chunks ``ids`` of the old index: same text, source, page and span, same vector to
    the bit (so nothing was embedded again)."""
    records = store.chunks(ids)
    assert [r.id for r in records] == ids
    for r in records:
        _, source, page, label, section, start, end, text = old_rows[r.id]
        assert (r.source, r.page, r.page_label, r.section, r.start, r.end, r.text) == (
            source, page, label, section, start, end, text
        )  # fmt: skip
    got = store.vectors(ids)
    want = np.stack([old_vectors[i] for i in ids])
    assert got.dtype == want.dtype == np.float32
    assert got.tobytes() == want.tobytes()


# --- the fixture is what the tests think it is ---


def test_the_fixture_is_a_schema2_index_with_an_id_gap(
    old_rows: dict[int, tuple[object, ...]], old_vectors: dict[int, np.ndarray]
) -> None:
    assert (FIXTURE / "CURRENT").read_text().strip() == OLD_SNAPSHOT
    for snap in ("snap-000001", OLD_SNAPSHOT):
        raw = json.loads((FIXTURE / snap / "manifest.json").read_text(encoding="utf-8"))
        assert raw["schema_version"] == 2
        assert raw["index_type"] == "IndexIDMap2(IndexFlatIP)"
        assert "segments" not in raw
        assert sorted(p.name for p in (FIXTURE / snap).iterdir()) == [
            "docstore.sqlite", "manifest.json", "vectors.faiss"
        ]  # fmt: skip
    assert sorted(old_rows) == sorted(old_vectors) == OLD_CHUNK_IDS
    by_doc = {doc: sorted(i for i, r in old_rows.items() if r[0] == doc) for doc in OLD_IDS}
    assert by_doc == {doc: list(ids) for doc, ids in OLD_IDS.items()}
    db = sqlite3.connect(f"file:{FIXTURE / OLD_SNAPSHOT / 'docstore.sqlite'}?mode=ro", uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key = 'max_chunk_id'").fetchone()
    finally:
        db.close()
    assert int(meta[0]) == MAX_CHUNK_ID
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1_000_000


# --- read as it is ---


def test_a_schema2_index_opens_and_answers_as_it_is(
    legacy: Path,
    embedder: Embedder,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
) -> None:
    before = _tree(legacy)
    assert verify(legacy) == []
    with Store.open(legacy) as store:
        assert store.snapshot.name == OLD_SNAPSHOT
        assert store.manifest.schema_version == 2
        assert not store.manifest.segmented
        assert store.manifest.index_type == "IndexIDMap2(IndexFlatIP)"
        assert store.counts() == (3, 29)
        assert store.ntotal == 29
        assert [(d.id, _name(d.source), d.kind, d.pages, d.chunks) for d in store.documents()] == [
            (1, SOTU, "text", 1, 4),
            (3, PDF, "pdf", 4, 23),
            (4, ESSAY, "text", 1, 2),
        ]
        _assert_old_chunks_kept(store, old_rows, old_vectors, OLD_CHUNK_IDS)
        assert store.chunks(DELETED_CHUNK_IDS) == []

        # Dense: the Llama 2 paper answers a question about it, with the stored vectors' scores.
        q = embedder.embed_query(LLAMA_QUESTION)
        hits = store.search(q, 5)
        assert len(hits) == 5
        assert all(i in OLD_IDS[3] for i, _ in hits[:3])
        for i, score in hits:
            assert score == pytest.approx(float(old_vectors[i] @ q), abs=1e-5)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)

        # Lexical (FTS5 BM25 over the old docstore).
        assert {i for i, _ in store.lexical_search("Putin", 10)} <= set(OLD_IDS[1])
        assert store.lexical_search("Putin", 10)
        essay = store.lexical_search("IBM 1401 programs", 3)
        assert essay and essay[0][0] in OLD_IDS[4]

        # Filters, dense and lexical.
        pdf_only = store.search_filtered(q, 40, Filters(kinds=("pdf",)))
        assert sorted(i for i, _ in pdf_only) == list(OLD_IDS[3])
        page_2 = store.search_filtered(q, 40, Filters(pages=(2, 2)))
        assert page_2 and {old_rows[i][2] for i, _ in page_2} == {2}
        texts = store.search_filtered(q, 40, Filters(source_glob="*.txt"))
        assert sorted(i for i, _ in texts) == [*OLD_IDS[1], *OLD_IDS[4]]
        assert store.lexical_search("Putin", 10, Filters(kinds=("pdf",))) == []
        assert store.lexical_search("Putin", 10, Filters(source_glob="a_*"))
        assert store.filter_ids(kinds=["pdf"], pages=(4, 4)) == sorted(
            i for i in OLD_IDS[3] if old_rows[i][2] == 4
        )
    assert _tree(legacy) == before


def test_rag_info_and_verify_on_a_schema2_index(
    legacy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(legacy.parent)  # no rag.toml from the working directory
    before = _tree(legacy)
    assert main(["info", "--index", str(legacy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["schema_version"], info["index_type"]) == (2, "IndexIDMap2(IndexFlatIP)")
    assert (info["snapshot"], info["documents"], info["chunks"]) == (OLD_SNAPSHOT, 3, 29)
    assert info["segments"] == []
    assert sorted(_name(s["source"]) for s in info["sources"]) == [SOTU, PDF, ESSAY]

    assert main(["index", "verify", "--index", str(legacy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert (report["documents"], report["chunks"], report["segments"]) == (3, 29, 1)
    assert main(["index", "verify", "--index", str(legacy), "--recall"]) == 0
    assert "OK" in capsys.readouterr().out
    assert _tree(legacy) == before


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_rag_retrieves_from_a_schema2_index(
    legacy: Path, settings: Settings, embedder: Embedder, mode: str
) -> None:
    before = _tree(legacy)
    with RAG.open(legacy, settings, embedder=embedder) as rag:
        hits = rag.retrieve(
            "Llama 2 pretrained and fine-tuned chat models", k=3, retrieval_mode=mode
        )
        assert [h.n for h in hits] == [1, 2, 3]
        assert _name(hits[0].source) == PDF
        assert hits[0].page is not None and 1 <= hits[0].page <= 4
        essay = rag.retrieve("IBM 1401 programs", k=2, retrieval_mode=mode)
        assert essay and _name(essay[0].source) == ESSAY
    assert _tree(legacy) == before


# --- converted by the next write ---


def test_an_ingest_converts_it_without_embedding_the_old_chunks(
    legacy: Path,
    tmp_path: Path,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
) -> None:
    with Store.open(legacy) as store:
        q = embedder.embed_query(LLAMA_QUESTION)
        pdf_hits_before = store.search_filtered(q, 5, Filters(kinds=("pdf",)))
    new = tmp_path / "new" / "e_garden_note.txt"
    new.parent.mkdir()
    new.write_text(
        "Tomatoes need six hours of sun a day. Water them at the base, not on the leaves, "
        "and stake them before the fruit sets.\n",
        encoding="utf-8",
    )
    # One text per embedding call: the calls count the texts embedded.
    one_by_one = settings.model_copy(update={"embed_batch_size": 1})
    calls = embedder.calls
    report = ingest([new], legacy, one_by_one, embedder=embedder, tokenizer=tokenizer)
    assert (report.files_ingested, report.chunks_added) == (1, 1)
    assert embedder.calls - calls == 1  # the new chunk only, none of the 29 old ones

    snap = current_snapshot(legacy)
    m = read_manifest(snap)
    assert snap.name > OLD_SNAPSHOT
    assert (m.schema_version, m.index_type, m.segmented) == (3, "segments", True)
    assert 1 <= len(m.segments) <= 2
    assert (m.documents, m.chunks) == (4, 30)
    assert verify(legacy) == []
    with Store.open(legacy) as store:
        _assert_old_chunks_kept(store, old_rows, old_vectors, OLD_CHUNK_IDS)
        assert store.chunks(DELETED_CHUNK_IDS) == []
        docs = {_name(d.source): d for d in store.documents()}
        assert {n: d.id for n, d in docs.items() if n != new.name} == {SOTU: 1, PDF: 3, ESSAY: 4}
        assert docs[new.name].id > 4
        added = store.filter_ids(source_glob=new.name)
        assert len(added) == 1 and added[0] > MAX_CHUNK_ID
        assert store.chunks(added)[0].text.startswith("Tomatoes need six hours")
        # Searches over the old chunks give what they gave before, score for score.
        assert store.search_filtered(q, 5, Filters(kinds=("pdf",))) == pdf_hits_before
        assert {i for i, _ in store.lexical_search("Putin", 10)} <= set(OLD_IDS[1])
        assert store.lexical_search("Putin", 10)  # now tantivy postings of the new segment
        assert store.lexical_search("tomatoes sun", 1)[0][0] == added[0]
    assert m.next_chunk_id > added[0] and m.next_document_id > docs[new.name].id


def test_a_writer_converts_it_and_gives_new_ids_above_the_old_ones(
    legacy: Path,
    embedder: Embedder,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    texts = ["A first note about compost.", "A second note about mulch."]
    vectors = embedder.embed(texts)
    chunks = [
        NewChunk(text=t, page=None, page_label=None, section=None, start=0, end=len(t), tokens=6)
        for t in texts
    ]
    with open_writer(legacy, read_manifest(current_snapshot(legacy))) as writer:
        assert not writer.migrated  # read as it is until the first change
        assert writer.counts() == (3, 29)
        assert not (legacy / "segments").exists()
        doc_id = writer.add_document(
            source=str(legacy.parent / "notes.txt"), sha256="0" * 64, kind="text",
            size=55, pages=1, title=None, chunks=chunks, vectors=vectors,
        )  # fmt: skip
        assert writer.migrated
        snap = writer.commit()
    assert doc_id == 5  # after the largest document id the old index gave (4)
    m = read_manifest(snap)
    assert m.schema_version == 3 and 1 <= len(m.segments) <= 2
    assert (m.documents, m.chunks) == (4, 31)
    assert (m.next_document_id, m.next_chunk_id) == (6, MAX_CHUNK_ID + 3)
    assert verify(legacy) == []
    with Store.open(legacy) as store:
        _assert_old_chunks_kept(store, old_rows, old_vectors, OLD_CHUNK_IDS)
        new_ids = [MAX_CHUNK_ID + 1, MAX_CHUNK_ID + 2]
        assert [c.text for c in store.chunks(new_ids)] == texts
        assert store.vectors(new_ids).tobytes() == vectors.tobytes()
        assert store.filter_ids() == sorted(OLD_CHUNK_IDS + new_ids)
    assert main(["index", "verify", "--index", str(legacy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and (report["documents"], report["chunks"]) == (4, 31)


def test_rag_index_optimize_converts_it(
    legacy: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
) -> None:
    monkeypatch.chdir(legacy.parent)
    assert main(["index", "optimize", "--index", str(legacy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True
    assert (out["before"]["schema_version"], out["after"]["schema_version"]) == (2, 3)
    assert (out["after"]["segments"], out["after"]["chunks"]) == (1, 29)
    m = read_manifest(current_snapshot(legacy))
    assert m.schema_version == 3 and len(m.segments) == 1
    assert (m.segments[0].chunks, m.segments[0].deleted_chunks) == (29, 0)
    assert m.next_chunk_id == MAX_CHUNK_ID + 1
    assert verify(legacy) == []
    with Store.open(legacy) as store:
        _assert_old_chunks_kept(store, old_rows, old_vectors, OLD_CHUNK_IDS)
        assert store.filter_ids() == OLD_CHUNK_IDS
    # Optimizing again finds one segment without deleted rows: nothing to do.
    assert main(["index", "optimize", "--index", str(legacy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


def test_rag_index_delete_removes_the_document_and_converts_it(
    legacy: Path,
    embedder: Embedder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    old_rows: dict[int, tuple[object, ...]],
    old_vectors: dict[int, np.ndarray],
) -> None:
    monkeypatch.chdir(legacy.parent)
    assert main(["index", "delete", "--index", str(legacy), "--json", "d_paul_graham*"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(_name(d["source"]), d["chunks"]) for d in out["removed"]] == [(ESSAY, 2)]
    m = read_manifest(current_snapshot(legacy))
    assert m.schema_version == 3
    assert (m.documents, m.chunks) == (2, 27)
    # The deleted document held the largest ids; they are still never given again.
    assert (m.next_document_id, m.next_chunk_id) == (5, MAX_CHUNK_ID + 1)
    assert verify(legacy) == []
    kept = [*OLD_IDS[1], *OLD_IDS[3]]
    with Store.open(legacy) as store:
        assert sorted(_name(d.source) for d in store.documents()) == [SOTU, PDF]
        _assert_old_chunks_kept(store, old_rows, old_vectors, kept)
        assert store.chunks(list(OLD_IDS[4])) == []
        assert store.filter_ids() == kept
        assert all(i not in OLD_IDS[4] for i, _ in store.lexical_search("IBM 1401 programs", 10))
        q = embedder.embed_query("What I worked on before college: writing and programming")
        assert all(i not in OLD_IDS[4] for i, _ in store.search(q, 27))


# --- readers keep their snapshot ---


def test_a_reader_of_the_schema2_snapshot_answers_after_the_conversion(
    legacy: Path, embedder: Embedder, old_rows: dict[int, tuple[object, ...]]
) -> None:
    q = embedder.embed_query(LLAMA_QUESTION)
    reader = Store.open(legacy)
    try:
        dense = reader.search(q, 5)
        lexical = reader.lexical_search("Putin NATO", 5)
        filtered = reader.search_filtered(q, 5, Filters(kinds=("pdf",), pages=(1, 2)))
        assert dense and lexical and filtered

        text = "A note about soil."
        with open_writer(legacy, read_manifest(current_snapshot(legacy))) as writer:
            writer.add_document(
                source=str(legacy.parent / "soil.txt"), sha256="1" * 64, kind="text", size=18,
                pages=1, title=None,
                chunks=[NewChunk(text, None, None, None, 0, len(text), 5)],
                vectors=embedder.embed([text]),
            )  # fmt: skip
            writer.commit()
        assert read_manifest(current_snapshot(legacy)).schema_version == 3

        # The old reader still sees the schema-2 snapshot, which the conversion left on disk.
        assert reader.manifest.schema_version == 2
        assert (legacy / OLD_SNAPSHOT / "docstore.sqlite").is_file()
        assert reader.search(q, 5) == dense
        assert reader.lexical_search("Putin NATO", 5) == lexical
        assert reader.search_filtered(q, 5, Filters(kinds=("pdf",), pages=(1, 2))) == filtered
        assert reader.counts() == (3, 29)
        assert [c.text for c in reader.chunks([i for i, _ in dense])] == [
            old_rows[i][7] for i, _ in dense
        ]
    finally:
        reader.close()
    with Store.open(legacy) as fresh:
        assert fresh.manifest.schema_version == 3
        assert fresh.counts() == (4, 30)


def test_converting_refuses_other_settings(legacy: Path) -> None:
    """A write with other chunking settings than the old index's is refused before anything is
    converted: the schema-2 snapshot stays as it was."""
    before = _tree(legacy)
    other = read_manifest(current_snapshot(legacy)).model_copy(update={"chunk_tokens": 100})
    with pytest.raises(IndexMismatch, match="chunk_tokens"), open_writer(legacy, other):
        pass
    after = _tree(legacy)
    after.pop(".lock", None)  # the writer lock file is created by any write attempt
    assert after == before


def test_a_write_that_changes_nothing_leaves_it_as_it_is(legacy: Path) -> None:
    """Opening a writer (as every ingest does, also one that finds nothing new) converts nothing:
    the conversion costs the whole index, so only a change pays it."""
    before = sorted(p.relative_to(legacy) for p in legacy.rglob("*"))
    with open_writer(legacy, read_manifest(current_snapshot(legacy))) as writer:
        assert writer.find_source("no such file") is None
        assert len(writer.documents()) == 3
    after = sorted(p.relative_to(legacy) for p in legacy.rglob("*"))
    assert [p for p in after if p not in before] in ([], [Path(".lock")])
    assert read_manifest(current_snapshot(legacy)).schema_version == 2


def test_a_schema1_index_gains_its_headings_when_converted(
    legacy: Path, old_vectors: dict[int, np.ndarray]
) -> None:
    """Schema 1 had no heading column and a one-column FTS5 table. Made from the fixture by
    taking both away, it still opens, and its conversion computes each chunk's heading from its
    document's title and its section, as schema 2 did."""
    snap = current_snapshot(legacy)
    db = sqlite3.connect(snap / "docstore.sqlite")
    headings = dict(db.execute("SELECT id, heading FROM chunks").fetchall())
    db.executescript(
        """
        DROP TRIGGER chunks_ai; DROP TRIGGER chunks_ad; DROP TABLE chunks_fts;
        ALTER TABLE chunks DROP COLUMN heading;
        CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',
                                                   tokenize='porter unicode61');
        INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild');
        """
    )
    db.close()
    manifest = json.loads((snap / "manifest.json").read_text(encoding="utf-8"))
    (snap / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 1}), "utf-8")
    with Store.open(legacy) as store:
        assert store.manifest.schema_version == 1
        assert store.lexical_search("Llama", 3)
    assert optimize_cli(legacy) == 0
    m = read_manifest(current_snapshot(legacy))
    assert m.schema_version == 3 and verify(legacy) == []
    with Store.open(legacy) as store:
        (seg,) = store.segments
        converted = dict(seg.db.execute("SELECT id, heading FROM chunks").fetchall())
        assert converted == headings
        ids = sorted(old_vectors)
        assert np.array_equal(store.vectors(ids), np.stack([old_vectors[i] for i in ids]))


def optimize_cli(index: Path) -> int:
    return main(["index", "optimize", "--index", str(index)])
