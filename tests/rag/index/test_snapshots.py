"""Snapshots survive a damaged CURRENT, and `rag index recover` makes the index whole again.

Real parts throughout: real text files, the session's real embedder and tokenizer, real FAISS and
SQLite, the real CLI (in-process).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest import ingest
from rag.cli import main
from rag.config import Settings
from rag.errors import IndexCorrupt, IndexNotFound
from rag.index.manifest import MANIFEST, read_manifest
from rag.index.reader import Store
from rag.index.recovery import recover
from rag.index.snapshots import current_name, snapshot_names
from rag.index.verify import verify
from rag.index.writer import open_writer
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS


def _tree(index: Path) -> dict[str, bytes]:
    """Every file of every snapshot and segment directory, with its bytes."""
    dirs = [index / name for name in snapshot_names(index)] + [index / "segments"]
    return {
        str(p.relative_to(index)): p.read_bytes()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _name_missing_segment(snapshot: Path) -> None:
    """Damage a snapshot: its manifest lists a segment that is not on disk."""
    m = read_manifest(snapshot)
    lost = m.segments[-1].model_copy(update={"name": "seg-999999"})
    damaged = m.model_copy(update={"segments": [*m.segments[:-1], lost]})
    (snapshot / MANIFEST).write_text(damaged.model_dump_json(), encoding="utf-8")


@pytest.fixture
def three_snapshots(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> tuple[Path, Path]:
    """An index committed twice, plus the complete snapshot of a write killed before CURRENT."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCUMENTS / "text" / "LICENSE.chat-your-data.txt", docs / "license.txt")
    index = tmp_path / "index"
    ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    text = (DOCUMENTS / "text" / "state_of_the_union.txt").read_text(encoding="utf-8")
    (docs / "speech.txt").write_text(text[:3000], encoding="utf-8")
    ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    assert snapshot_names(index) == ["snap-000001", "snap-000002"]
    shutil.copytree(index / "snap-000002", index / "snap-000003")
    return index, docs


@pytest.mark.parametrize("pointer", ["", "garbage\n", "snap-999999\n", "snap-000002/../x\n"])
def test_a_damaged_current_costs_no_snapshot(
    three_snapshots: tuple[Path, Path],
    pointer: str,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index, docs = three_snapshots
    (index / "CURRENT").write_text(pointer, encoding="utf-8")
    before = _tree(index)
    manifest = read_manifest(index / "snap-000002")

    # Taking the writer lock, directly or through an ingest, refuses and deletes nothing.
    with pytest.raises(IndexCorrupt) as info, open_writer(index, manifest):
        pass
    assert _tree(index) == before
    message = str(info.value)
    assert f"rag index recover --index {index}" in message
    assert "snap-000001, snap-000002, snap-000003" in message
    (docs / "more.txt").write_text("One more document about retrieval.\n", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="rag index recover"):
        ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    assert _tree(index) == before

    # verify lists what is on disk and names the recovery command.
    capsys.readouterr()
    assert main(["index", "verify", "--index", str(index)]) == IndexCorrupt.exit_code
    err = capsys.readouterr().err
    assert "snapshots on disk: snap-000001, snap-000002, snap-000003" in err
    assert f"rag index recover --index {index}" in err
    assert _tree(index) == before

    # recover points CURRENT at the newest snapshot that verifies; the index answers again.
    assert main(["index", "recover", "--index", str(index)]) == 0
    assert "CURRENT now names snap-000003" in capsys.readouterr().out
    assert current_name(index) == "snap-000003"
    assert verify(index) == []
    assert main(["index", "verify", "--index", str(index)]) == 0
    with Store.open(index) as store:
        assert store.counts()[0] == 2
        (top, _), *_ = store.search(embedder.embed_query("Ukraine"), 3)
        assert "speech.txt" in store.chunks([top])[0].source
    assert _tree(index) == before
    report = ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    assert (report.added, report.unchanged, report.documents_total) == (1, 2, 3)


def test_recover_skips_snapshots_that_do_not_verify(three_snapshots: tuple[Path, Path]) -> None:
    index, _ = three_snapshots
    _name_missing_segment(index / "snap-000003")  # a damaged newest snapshot
    (index / "CURRENT").write_text("garbage\n", encoding="utf-8")
    result = recover(index)
    assert (result.snapshot, result.previous, result.changed) == ("snap-000002", "garbage", True)
    assert list(result.rejected) == ["snap-000003"]
    assert "seg-999999" in result.rejected["snap-000003"][0]
    assert result.snapshots == ["snap-000001", "snap-000002", "snap-000003"]
    assert verify(index) == []
    # A sound CURRENT is left alone, even with a newer complete snapshot on disk.
    shutil.copy(index / "snap-000002" / MANIFEST, index / "snap-000003" / MANIFEST)
    again = recover(index)
    assert (again.snapshot, again.changed) == ("snap-000002", False)
    assert current_name(index) == "snap-000002"


def test_recover_refuses_when_nothing_verifies(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound, match="rag ingest"):
        recover(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IndexNotFound, match="rag ingest"):
        recover(empty)
    (empty / "snap-000001").mkdir()
    (empty / "CURRENT").write_text("snap-000001\n", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match=r"snap-000001: Cannot read .*manifest\.json"):
        recover(empty)
    assert (empty / "snap-000001").is_dir()


def test_a_missing_current_with_snapshots_is_no_index_and_keeps_them(
    three_snapshots: tuple[Path, Path],
) -> None:
    """CURRENT gone (deleted by hand, or a first write killed before it): nothing is deleted
    until a new write has published a readable snapshot of its own."""
    index, _ = three_snapshots
    (index / "CURRENT").unlink()
    before = _tree(index)
    with pytest.raises(IndexNotFound, match="rag index recover") as info:
        verify(index)
    assert "snap-000001, snap-000002, snap-000003" in str(info.value)
    with (
        pytest.raises(RuntimeError, match="abandoned"),
        open_writer(index, read_manifest(index / "snap-000002")),
    ):
        raise RuntimeError("abandoned")
    assert _tree(index) == before
    assert recover(index).snapshot == "snap-000003"
    assert verify(index) == []
    with Store.open(index) as store:
        assert store.counts()[0] == 2
