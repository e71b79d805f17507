"""`rag eval` on small real samples of SciFact (BEIR) and COVID-QA (SQuAD format)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from rag.cli import main
from rag.evaluation import mrr_at, ndcg_at, recall_at
from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact" / "derived_beir_style"
COVIDQA = SHARED_DATA / "covidqa" / "200423_covidQA.json"


def test_metric_functions() -> None:
    rel = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "c"], rel, 10) == pytest.approx(1.0)
    assert ndcg_at(["c", "a"], {"a": 1}, 10) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert recall_at(["a", "c"], rel, 10) == 0.5
    assert mrr_at(["c", "d", "b"], rel, 10) == pytest.approx(1 / 3)
    assert mrr_at(["c"], rel, 10) == 0.0


@pytest.fixture(scope="module")
def mini_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 SciFact queries, their relevant abstracts and 260 other abstracts."""
    root = tmp_path_factory.mktemp("beir")
    qrels = [line.split("\t") for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()]
    header, rows = qrels[0], qrels[1:]
    queries = sorted({r[0] for r in rows}, key=int)[:40]
    keep_rows = [r for r in rows if r[0] in queries]
    relevant = {r[1] for r in keep_rows}
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as fh:
        docs = [json.loads(line) for line in fh]
    others = [d for d in docs if d["_id"] not in relevant]
    chosen = [d for d in docs if d["_id"] in relevant] + random.Random(0).sample(others, 260)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    lines = (SCIFACT / "queries.jsonl").read_text().splitlines()
    (root / "queries.jsonl").write_text(
        "".join(line + "\n" for line in lines if json.loads(line)["_id"] in queries)
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "\n".join("\t".join(r) for r in [header, *keep_rows]) + "\n"
    )
    return root


@pytest.mark.slow
def test_beir_eval_reports_every_mode(
    mini_beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "--beir", str(mini_beir), "--index", str(tmp_path / "idx"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for mode in ("dense", "lexical", "hybrid"):
        m = out[mode]
        assert set(m) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        assert m["queries"] == 40
        # 300 documents only: every mode must find most relevant abstracts.
        assert 0.5 < m["ndcg@10"] <= 1.0, (mode, m)
        assert m["recall@100"] >= m["recall@10"]
    # Human-readable table too, reusing the built index.
    assert main(["eval", "--beir", str(mini_beir), "--index", str(tmp_path / "idx")]) == 0
    table = capsys.readouterr().out
    assert "ndcg@10" in table and "hybrid" in table


@pytest.fixture(scope="module")
def mini_squad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two COVID-QA articles with 3 of their questions each, plus 2 unanswerable questions."""
    data = json.loads(COVIDQA.read_text())["data"][:2]
    for article in data:
        para = article["paragraphs"][0]
        para["qas"] = para["qas"][:3]
    data[0]["paragraphs"][0]["qas"] += [
        {"question": "Who won the 1998 football World Cup?", "id": 90001, "answers": [],
         "is_impossible": True},
        {"question": "What is the boiling point of liquid nitrogen?", "id": 90002,
         "answers": [], "is_impossible": True},
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("squad") / "mini.json"
    path.write_text(json.dumps({"data": data}))
    return path


@pytest.mark.slow
def test_squad_eval_reports_answer_and_citation_metrics(
    mini_squad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--squad", str(mini_squad), "--index", str(tmp_path / "idx"), "--json",
            "--max-tokens", "48"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["hybrid"]
    assert m["queries"] == 8
    assert m["hit@4"] >= 0.5  # answer-bearing passages are retrieved for most questions
    for key in ("exact_match", "f1", "abstention_recall", "abstained_on_answerable"):
        assert 0.0 <= m[key] <= 1.0
    assert m["citation_precision"] is None or 0.0 <= m["citation_precision"] <= 1.0
