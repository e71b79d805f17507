"""The `rag` command on the real shared documents, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.cli import main
from tests.conftest import DOCUMENTS


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def documents_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli") / "index"


@pytest.mark.slow
def test_ingest_ask_info_on_the_shared_documents(
    documents_index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(documents_index.parent)
    code, out, _ = _run(capsys, "ingest", str(DOCUMENTS), "--index", str(documents_index), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["files_ingested"] >= 10
    assert report["chunks_added"] == report["chunks_total"] > 0
    skipped = {Path(s["path"]).name: s["reason"] for s in report["files_skipped"]}
    assert "OCR" in skipped["hybrid_search_article_print_no_text_layer.pdf"]
    assert report["pages_without_text"] == 12  # the scanned PDF's pages, counted in the summary

    code, out, _ = _run(capsys, "info", "--index", str(documents_index), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["chunks"] == report["chunks_total"]
    assert info["documents"] == report["documents_total"]
    assert info["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["dimension"] == 384
    assert info["index_type"] == "IndexIDMap2(IndexFlatIP)"

    code, out, _ = _run(
        capsys,
        "ask",
        "What does the Transformer use instead of recurrence?",
        "--index",
        str(documents_index),
        "--json",
        "--max-tokens",
        "64",
    )
    assert code == 0
    answer = json.loads(out)
    assert set(answer) >= {"answer", "citations", "abstained", "model", "usage"}
    assert set(answer["usage"]) >= {"prompt_tokens", "completion_tokens"}
    assert answer["citations"], answer
    first = answer["citations"][0]
    assert set(first) >= {"n", "source", "page", "text", "score"}
    assert "attention_is_all_you_need" in Path(first["source"]).name
    assert isinstance(first["page"], int) and first["page"] >= 1

    # A second ingest of the same files changes nothing.
    code, out, _ = _run(capsys, "ingest", str(DOCUMENTS), "--index", str(documents_index), "--json")
    again = json.loads(out)
    assert code == 0
    assert again["chunks_added"] == 0
    assert again["unchanged"] == report["files_ingested"]
    code, out, _ = _run(capsys, "info", "--index", str(documents_index), "--json")
    after = json.loads(out)
    assert (after["chunks"], after["documents"]) == (info["chunks"], info["documents"])


def test_ingest_human_output_and_nothing_ingested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    code, out, err = _run(capsys, "ingest", str(tmp_path / "empty.txt"), str(tmp_path / "missing"),
                          "--index", str(tmp_path / "idx"))  # fmt: skip
    assert code != 0
    assert "empty file" in err and "does not exist" in err
    assert "Traceback" not in err
    assert not (tmp_path / "idx" / "CURRENT").exists()

    good = tmp_path / "notes.md"
    good.write_text("# Notes\n\nThe launch code word is heliotrope.\n")
    code, out, _ = _run(capsys, "ingest", str(good), str(tmp_path / "empty.txt"), "--index",
                        str(tmp_path / "idx"))  # fmt: skip
    assert code == 0
    assert "Ingested 1 file(s)" in out
    assert "skipped" in out and "empty file" in out


def test_console_script_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    env = {**os.environ, "RAG_TOP_K": "3"}
    missing = subprocess.run(
        [rag, "ask", "anything", "--index", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 3
    assert "rag ingest" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = subprocess.run(
        [rag, "info", "--index", str(tmp_path)], capture_output=True, text=True,
        env={**env, "RAG_TOP_K": "zero"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert "top_k" in bad.stderr and "Traceback" not in bad.stderr
