"""`rag ask`, `rag chat` and `rag eval --squad` in extract mode, as a user runs them."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport
from rag.cli import main
from rag.cli.app import _parser
from rag.cli.options import settings as settings_of

QUESTION = "How many parallel attention heads does the Transformer employ?"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_ask_json_carries_the_mode_and_the_quoted_spans(
    built_index: tuple[Path, IngestReport], capsys: pytest.CaptureFixture[str]
) -> None:
    index = str(built_index[0])
    code, out = _run(
        capsys, "ask", QUESTION, "--index", index, "--answer-mode", "extract", "--json"
    )
    assert code == 0
    answer = json.loads(out)
    assert answer["mode"] == "extract" and not answer["abstained"]
    assert answer["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    passages = {p["n"]: p for p in answer["passages"]}
    for q in answer["quotes"]:
        assert set(q) >= {"n", "text", "source", "page", "start", "end", "doc_start", "doc_end"}
        assert passages[q["n"]]["text"][q["start"] : q["end"]] == q["text"]
        assert q["doc_start"] == passages[q["n"]]["start"] + q["start"]
    assert "8 parallel attention layers" in answer["quotes"][0]["text"]


def test_ask_prints_each_quote_with_its_citation(
    built_index: tuple[Path, IngestReport],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_ANSWER_MODE", "extract")  # the setting, without the flag
    code, out = _run(capsys, "ask", QUESTION, "--index", str(built_index[0]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith('"In this work we employ h = 8 parallel attention layers')
    assert "attention_is_all_you_need_neurips2017.pdf, page 5, characters" in lines[1]
    assert "Sources:" in out
    code, out = _run(capsys, "ask", "What is the capital of Australia?", "--index",
                     str(built_index[0]))  # fmt: skip
    assert code == 0 and "do not answer this" in out


def test_chat_in_extract_mode(
    built_index: tuple[Path, IngestReport],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages: Iterator[str] = iter(
        ["How many identical layers does the encoder have?", "And the decoder?"]
    )

    def fake_input(prompt: str = "") -> str:
        try:
            return next(messages)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    code, out = _run(capsys, "chat", "--index", str(built_index[0]), "--answer-mode", "extract")
    assert code == 0
    quotes = [line for line in out.splitlines() if line.startswith('"')]
    # The quote leaves out what restates the question ("... identical layers").
    assert len(quotes) >= 2 and any("N = 6" in q for q in quotes), out


def test_answer_mode_flag_reaches_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["ask", "q"], ["chat"]):
        args = _parser().parse_args([*command, "--answer-mode", "extract"])
        assert settings_of(args).resolved_answer_mode == "extract"
        assert settings_of(_parser().parse_args(command)).answer_mode == "auto"
    with pytest.raises(SystemExit) as info:
        main(["ask", "q", "--answer-mode", "quote"])
    assert info.value.code == 2 and "--answer-mode" in capsys.readouterr().err


def test_squad_eval_in_extract_mode_reports_abstention_by_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contexts = [
        "The Bell Rock Lighthouse stands off the coast of Angus, Scotland. It was built between "
        "1807 and 1810 by the engineer Robert Stevenson.",
        "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria. The "
        "starter is fed with flour and water every day.",
        "The river Tay is the longest river in Scotland, at about 188 kilometres. It flows "
        "through the city of Perth.",
    ]
    questions = [
        ("Who built the Bell Rock Lighthouse?", "Robert Stevenson"),
        ("What leavens sourdough bread?", "a starter of wild yeast and lactic acid bacteria"),
        ("How long is the river Tay?", "about 188 kilometres"),
    ]
    data = [
        {"title": f"doc{i}", "paragraphs": [{"context": c, "qas": [
            {"id": str(i), "question": q, "is_impossible": False,
             "answers": [{"text": a, "answer_start": c.find(a)}]}]}]}
        for i, (c, (q, a)) in enumerate(zip(contexts, questions, strict=True))
    ]  # fmt: skip
    path = tmp_path / "mini.json"
    path.write_text(json.dumps({"data": data}))
    argv = ["eval", "--squad", str(path), "--index", str(tmp_path / "idx"), "--json",
            "--answer-mode", "extract", "--unanswerable", "5"]  # fmt: skip
    code, out = _run(capsys, *argv)
    assert code == 0
    m = json.loads(out)["hybrid"]
    assert m["answer_mode"] == "extract"
    assert m["heldout_questions"] == 1 and m["offtopic_questions"] >= 20
    for key in (
        "f1",
        "sentence_accuracy",
        "offtopic_abstention_recall",
        "heldout_abstention_recall",
    ):
        assert 0.0 <= m[key] <= 1.0, (key, m)
    assert m["sentence_accuracy"] >= 2 / 3  # three sentences that answer, one per document
    assert m["seconds_per_question"] < 5
    assert len(list(tmp_path.glob("idx-without-*"))) == 1  # the held-out copy, kept for reuse
