"""An ingest whose commit is published but whose merge or clean-up afterwards fails: the data is
in, so the run succeeds and reports a warning with what to run, in its report and in the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ingest
from rag.cli import main
from rag.config import Settings
from rag.index import writer as writer_module
from rag.index.reader import Store
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder


def _broken_merge(index_dir: Path, snapshot: Path) -> Path:
    raise OSError("No space left on device")


def test_a_failed_merge_after_the_commit_is_reported_as_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Quokkas live on Rottnest Island off Western Australia.\n")
    index = tmp_path / "index"
    monkeypatch.setattr(writer_module, "merge_by_policy", _broken_merge)

    report = ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    assert report.files_ingested == 1 and report.chunks_total >= 1
    (warning,) = report.warnings
    assert "No space left on device" in warning and "rag index optimize" in warning
    with Store.open(index) as store:
        assert [Path(d.source).name for d in store.documents()] == ["a.txt"]

    (docs / "b.txt").write_text("Wombats produce cube-shaped droppings.\n")
    assert main(["ingest", str(docs), "--index", str(index)]) == 0
    out, err = capsys.readouterr()
    assert "Ingested 1 file(s)" in out
    assert "No space left on device" in out + err and "rag index optimize" in out + err
    with Store.open(index) as store:
        assert [Path(d.source).name for d in store.documents()] == ["a.txt", "b.txt"]
