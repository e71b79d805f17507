"""Incremental sync (deletes, moves), dry runs, `rag index delete` and `rag index verify`."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ingest import IngestReport, ingest
from rag.cli import main
from rag.config import Settings
from rag.errors import IndexCorrupt
from rag.index.manifest import read_manifest
from rag.index.reader import Store
from rag.index.segment import IDS, ROWS, SEGMENTS
from rag.index.snapshots import current_snapshot
from rag.index.vectors import FLAT_FILE
from rag.index.verify import verify
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS
from tests.ingest.test_pipeline import _digest, _head, _write


@pytest.fixture(scope="module")
def texts() -> dict[str, bytes]:
    readme = DOCUMENTS / "text" / "llama2c_README.md"
    speech = DOCUMENTS / "text" / "state_of_the_union.txt"
    return {
        "guide.md": _head(readme, 600).encode(),
        "notes.txt": _head(speech, 600).encode(),
        "sub/more.txt": f"{_head(speech, 1500)[800:]}\n".encode(),
    }


class _Run:
    def __init__(self, settings: Settings, embedder: Embedder, tokenizer: Tokenizer) -> None:
        self.settings, self.embedder, self.tokenizer = settings, embedder, tokenizer

    def __call__(self, paths: list[Path], index: Path, **kw: bool) -> IngestReport:
        return ingest(
            paths, index, self.settings, embedder=self.embedder, tokenizer=self.tokenizer, **kw
        )


@pytest.fixture(scope="module")
def run(settings: Settings, embedder: Embedder, tokenizer: Tokenizer) -> _Run:
    return _Run(settings, embedder, tokenizer)


def _docs(index: Path) -> dict[str, tuple[str, list[int]]]:
    """sha256 and chunk ids of each document, by source."""
    with Store.open(index) as store:
        out = {}
        for d in store.documents():
            # The sources of these tests hold no glob characters.
            out[d.source] = (d.sha256, sorted(store.filter_ids(source_glob=d.source)))
        return out


def test_sync_deletes_gone_files_and_keeps_moved_ones(
    tmp_path: Path, texts: dict[str, bytes], run: _Run, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    for name, data in texts.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_bytes(data)
    other = _write(tmp_path / "other", {"outside.txt": b"A file outside the synced folder.\n"})
    index = tmp_path / "index"
    first = run([docs, other], index)
    before = _docs(index)
    guide = str((docs / "guide.md").resolve())

    # guide.md moves into a new folder, sub/more.txt is deleted; outside.txt is gone as well,
    # but its folder is not synced, so it stays.
    (docs / "moved").mkdir()
    (docs / "guide.md").rename(docs / "moved" / "guide-renamed.md")
    (docs / "sub" / "more.txt").unlink()
    (other / "outside.txt").unlink()
    calls = embedder.calls

    plan = run([docs], index, sync=True, dry_run=True)
    assert plan.dry_run and plan.plan is not None
    moved = str((docs / "moved" / "guide-renamed.md").resolve())
    assert [(r.source, r.target) for r in plan.plan.renamed] == [(guide, moved)]
    assert plan.plan.deleted == [str((docs / "sub" / "more.txt").resolve())]
    assert plan.plan.unchanged == [str((docs / "notes.txt").resolve())]
    assert plan.plan.added == plan.plan.updated == []
    assert (plan.renamed, plan.deleted, plan.unchanged) == (1, 1, 1)

    report = run([docs], index, sync=True)
    assert embedder.calls == calls  # nothing was embedded, not even the moved file
    assert (report.renamed, report.deleted, report.unchanged) == (1, 1, 1)
    assert report.added == report.updated == report.files_ingested == 0
    more = str((docs / "sub" / "more.txt").resolve())
    assert report.chunks_removed == len(before[more][1])
    assert report.documents_total == 3
    after = _docs(index)
    assert after[moved] == before[guide]  # same content, same chunks and vectors
    assert guide not in after and more not in after
    assert str((other / "outside.txt").resolve()) in after
    assert report.chunks_total == first.chunks_total - len(before[more][1])
    assert verify(index) == []
    # The moved document is found under its new name by source filters.
    with Store.open(index) as store:
        assert sorted(store.filter_ids(source_glob="guide-renamed.md")) == before[guide][1]


def test_sync_of_an_emptied_folder_deletes_everything_in_it(
    tmp_path: Path, texts: dict[str, bytes], run: _Run
) -> None:
    docs = _write(tmp_path / "docs", {"guide.md": texts["guide.md"]})
    index = tmp_path / "index"
    run([docs], index)
    (docs / "guide.md").unlink()
    report = run([docs], index, sync=True)
    assert (report.deleted, report.documents_total, report.chunks_total) == (1, 0, 0)
    assert verify(index) == []


def test_dry_run_changes_nothing_and_loads_no_model(
    tmp_path: Path, texts: dict[str, bytes], run: _Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _write(tmp_path / "docs", {"guide.md": texts["guide.md"]})
    index = tmp_path / "index"
    run([docs], index)
    before = _digest(index)
    (docs / "guide.md").write_bytes(texts["notes.txt"])
    (docs / "new.txt").write_bytes(b"Something new.\n")

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("a dry run must not load a model")

    monkeypatch.setattr(Embedder, "from_settings", no_model)
    monkeypatch.setattr("ingest.pipeline.load_tokenizer", no_model)
    report = ingest([docs], index, run.settings, sync=True, dry_run=True)
    assert report.plan is not None
    assert report.plan.updated == [str((docs / "guide.md").resolve())]
    assert report.plan.added == [str((docs / "new.txt").resolve())]
    assert _digest(index) == before
    # On a directory without an index, everything would be added, and nothing is created.
    fresh = ingest([docs], tmp_path / "none", run.settings, dry_run=True)
    assert fresh.plan is not None and len(fresh.plan.added) == 2
    assert not (tmp_path / "none").exists()


def test_index_delete_removes_matching_documents_atomically(
    tmp_path: Path, built_index: tuple[Path, IngestReport], capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "copy"
    shutil.copytree(built_index[0], index)
    with Store.open(index) as store:
        docs = {Path(d.source).name: d for d in store.documents()}
    md = docs["llama2c_README.md"]

    assert main(["index", "delete", "--index", str(index), "*.md", "nothing-*", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["removed"] == [{"source": md.source, "chunks": md.chunks}]
    assert out["unmatched"] == ["nothing-*"]
    assert out["chunks_removed"] == md.chunks
    with Store.open(index) as store:
        assert store.counts() == (len(docs) - 1, built_index[1].chunks_total - md.chunks)
    assert verify(index) == []

    # An exact source; then a pattern that matches nothing fails and changes nothing.
    txt = docs["state_of_the_union.txt"].source
    assert main(["index", "delete", "--index", str(index), txt]) == 0
    assert f"removed {txt}" in capsys.readouterr().out
    before = _digest(index)
    assert main(["index", "delete", "--index", str(index), "*.docx"]) == 1
    assert "no document matches" in capsys.readouterr().err
    assert _digest(index) == before


def test_verify_passes_on_a_sound_index(
    built_index: tuple[Path, IngestReport], capsys: pytest.CaptureFixture[str]
) -> None:
    index, report = built_index
    assert verify(index) == []
    assert main(["index", "verify", "--index", str(index), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["chunks"] == report.chunks_total
    assert main(["index", "verify", "--index", str(index)]) == 0
    assert "OK" in capsys.readouterr().out


def _tampered(tmp_path: Path, built: Path) -> tuple[Path, Path]:
    index = tmp_path / "bad"
    shutil.copytree(built, index)
    return index, current_snapshot(index)


def test_verify_finds_a_missing_vector(
    tmp_path: Path, built_index: tuple[Path, IngestReport], capsys: pytest.CaptureFixture[str]
) -> None:
    index, snap = _tampered(tmp_path, built_index[0])
    seg = index / SEGMENTS / read_manifest(snap).segments[0].name
    ids, vectors = np.load(seg / IDS), np.load(seg / FLAT_FILE)
    gone = int(ids[0])
    np.save(seg / IDS, ids[1:])
    np.save(seg / FLAT_FILE, vectors[1:])
    problems = verify(index)
    assert any(f"1 chunk(s) without a vector (ids {gone})" in p for p in problems), problems
    assert main(["index", "verify", "--index", str(index)]) == IndexCorrupt.exit_code
    assert f"ids {gone}" in capsys.readouterr().err


def test_verify_finds_stale_postings_and_wrong_counts(
    tmp_path: Path, built_index: tuple[Path, IngestReport]
) -> None:
    index, snap = _tampered(tmp_path, built_index[0])
    seg = index / SEGMENTS / read_manifest(snap).segments[0].name
    db = sqlite3.connect(seg / ROWS)
    db.execute("DELETE FROM chunks WHERE id = (SELECT MIN(id) FROM chunks)")
    db.commit()
    db.close()
    problems = "\n".join(verify(index))
    assert "the postings hold" in problems  # tantivy still holds the deleted row
    assert "vector(s) without a chunk" in problems
    assert "the manifest says" in problems


def test_verify_finds_a_dangling_current(
    tmp_path: Path, built_index: tuple[Path, IngestReport]
) -> None:
    index, _ = _tampered(tmp_path, built_index[0])
    (index / "CURRENT").write_text("snap-999999\n", encoding="utf-8")
    assert "snap-999999" in verify(index)[0]
