"""The `rag` command on the real shared documents, as a user runs it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest import ingest
from rag.cli import main
from rag.config import Settings
from rag.index.reader import Store
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
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
    documents_index: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    embedder: Embedder,
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
    assert info["embedder"] == embedder.name  # the default (on a CPU: the int8 model)
    assert info["dimension"] == 384
    assert info["index_type"] == "segments"
    assert [s["vectors"] for s in info["segments"]] == ["flat"]

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


# ----------------------------------------------------------------------------- rag index delete


class _Terminal(io.StringIO):
    """Stands in for a person at a terminal (no pseudo-terminal is driven here): it says it is a
    TTY and answers ``input()`` with the given line."""

    def isatty(self) -> bool:
        return True


def _digest(index: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(index)): p.read_bytes()
        for p in sorted(index.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def three_docs(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> Path:
    """An index of the beginnings of three real text files (the session's real models)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("state_of_the_union.txt", "llama2c_README.md", "paul_graham_essay.txt"):
        text = (DOCUMENTS / "text" / name).read_text(encoding="utf-8")
        (docs / name).write_text(text[:1500], encoding="utf-8")
    index = tmp_path / "index"
    ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer)
    return index


def _sources(index: Path) -> list[str]:
    with Store.open(index) as store:
        return [Path(d.source).name for d in store.documents()]


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_delete_of_several_documents_without_a_terminal_needs_yes(
    three_docs: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a pipe, not a terminal
    before = _digest(three_docs)
    for pattern in ("*", "*.txt"):
        code, out, err = _run(capsys, "index", "delete", pattern, "--index", str(three_docs),
                              *extra)  # fmt: skip
        assert code == 2, (out, err)
        assert "--yes" in err and "nothing was deleted" in err
        assert _digest(three_docs) == before
    code, out, _ = _run(capsys, "index", "delete", "*.txt", "--yes", "--index", str(three_docs),
                        *extra)  # fmt: skip
    assert code == 0
    assert _sources(three_docs) == ["llama2c_README.md"]


def test_delete_asks_on_a_terminal(
    three_docs: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _digest(three_docs)
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    code, out, err = _run(capsys, "index", "delete", "*", "--index", str(three_docs))
    assert code == 1
    assert "every document (3)" in out and "Delete 3 documents? [y/N]" in out
    assert "state_of_the_union.txt" in out  # what would go is listed before asking
    assert "Nothing was deleted" in err
    assert _digest(three_docs) == before

    # One document of several goes without asking.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = _run(capsys, "index", "delete", "llama2c_README.md", "--index", str(three_docs))
    assert code == 0 and "1 document(s) removed" in out
    # The last two: asked, and confirmed.
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, _ = _run(capsys, "index", "delete", "*", "--index", str(three_docs))
    assert code == 0
    assert "Delete 2 documents? [y/N]" in out and "2 document(s) removed" in out
    assert _sources(three_docs) == []


def test_delete_of_the_only_document_asks(
    tmp_path: Path,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nThe launch code word is heliotrope.\n")
    index = tmp_path / "index"
    ingest([doc], index, settings, embedder=embedder, tokenizer=tokenizer)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = _run(capsys, "index", "delete", str(doc), "--index", str(index))
    assert code == 2 and "every document (1)" in err and "--yes" in err
    assert _sources(index) == ["notes.md"]


# ----------------------------------------------------------------------------- ask/chat flags


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_reversed_page_range_is_refused(
    three_docs: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = [command, "--index", str(three_docs), "--pages", "9-3"]
    code, _, err = _run(capsys, *(argv[:1] + ["anything"] * (command == "ask") + argv[1:]))
    assert code == 2
    assert "--pages 9-3" in err and "3-9" in err


def test_retrieval_flags_reach_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.cli.app import _parser
    from rag.cli.options import settings as settings_of

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text(
        'mmr = true\nreranker = "cross-encoder/ms-marco-MiniLM-L-6-v2"\nabstain_below = 0.5\n'
    )
    for command in (["ask", "q"], ["chat"], ["eval", "--squad", "x.json"]):
        configured = settings_of(_parser().parse_args(command))
        assert (configured.mmr, configured.abstain_below) == (True, 0.5)
        args = _parser().parse_args(
            [*command, "--no-mmr", "--hybrid-alpha", "0.25", "--fetch-k", "7", "--reranker",
             "none", "--abstain-below", "none"]
        )  # fmt: skip
        s = settings_of(args)
        assert (s.mmr, s.hybrid_alpha, s.fetch_k, s.reranker, s.abstain_below) == (
            False, 0.25, 7, None, None,
        )  # fmt: skip
        s = settings_of(_parser().parse_args([*command, "--mmr", "--abstain-below", "-0.2"]))
        assert (s.mmr, s.abstain_below) == (True, -0.2)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--hybrid-alpha", "1.5", "from 0 to 1"),
        ("--abstain-below", "2", "from -1 to 1"),
        ("--fetch-k", "0", "at least 1"),
        ("--fetch-k", "many", "not a number"),
    ],
)
def test_retrieval_flags_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ask", "anything", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and says in err


def test_abstain_below_flag_reaches_the_engine(
    three_docs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No passage reaches cosine similarity 1.0: the engine abstains without asking the model.
    code, out, _ = _run(capsys, "ask", "What is the launch code?", "--index", str(three_docs),
                        "--json", "--abstain-below", "1", "--no-mmr", "--fetch-k", "5")  # fmt: skip
    assert code == 0
    answer = json.loads(out)
    assert answer["abstained"] is True and answer["passages"]


def test_ask_json_passages_carry_score_and_similarity(
    three_docs: Path, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each passage of `rag ask --json` carries `score` (what ranked it in the mode used) and
    `similarity` (the cosine of question and passage, in every mode), and, deprecated for one
    release, `dense_score` with the same value as `similarity`."""
    question = "What did the president say about Ukraine?"
    q = embedder.embed([question])[0]
    by_mode = {}
    for mode in ("dense", "lexical", "hybrid"):
        # No passage reaches a cosine of 1: the engine abstains without asking the model and
        # still lists the passages it retrieved.
        code, out, _ = _run(capsys, "ask", question, "--index", str(three_docs), "--json",
                            "--mode", mode, "--abstain-below", "1")  # fmt: skip
        assert code == 0
        passages = json.loads(out)["passages"]
        assert passages, mode
        for p in passages:
            v = embedder.embed([p["text"]])[0]
            cosine = float(v @ q) / float(np.linalg.norm(v) * np.linalg.norm(q))
            assert p["similarity"] == pytest.approx(cosine, abs=1e-3), (mode, p)
            assert p["dense_score"] == p["similarity"]
        by_mode[mode] = passages
    assert all(p["score"] == pytest.approx(p["similarity"], abs=1e-5) for p in by_mode["dense"])
    # Lexical passages are ranked by BM25, which is not the cosine.
    assert all(p["score"] != pytest.approx(p["similarity"], abs=1e-3) for p in by_mode["lexical"])
    assert all(0.0 <= p["score"] <= 1.0 for p in by_mode["hybrid"])  # min-max fused
