"""`rag eval` on small real samples of SciFact (BEIR) and COVID-QA (SQuAD format)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import pytest

from rag.cli import main
from rag.config import EXTRACT_TOP_K
from rag.eval.beir import mrr_at, ndcg_at, recall_at
from rag.eval.squad import load_squad
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
    # Answer-bearing passages are retrieved for most questions (among the passages the answer
    # was made from: top_k, or extract_top_k in extract mode).
    assert m[_hit_key(m)] >= 0.5
    for key in ("exact_match", "f1", "abstention_recall", "abstained_on_answerable"):
        assert 0.0 <= m[key] <= 1.0
    assert m["citation_precision"] is None or 0.0 <= m["citation_precision"] <= 1.0


def _hit_key(m: dict[str, object]) -> str:
    """``hit@k`` for the passages the answers were made from."""
    return f"hit@{EXTRACT_TOP_K if m['answer_mode'] == 'extract' else 4}"


def _para(context: str, *qas: tuple[str, str | None, str]) -> dict[str, object]:
    """A SQuAD v2.0 paragraph; ``(question, answer or None when unanswerable, plausible)``."""
    out = []
    for i, (question, answer, plausible) in enumerate(qas):
        qid = f"{hashlib.sha256(context.encode()).hexdigest()[:8]}-{i}"
        if answer is None:
            span = {"text": plausible, "answer_start": context.find(plausible)}
            out.append({"question": question, "id": qid, "answers": [],
                        "plausible_answers": [span], "is_impossible": True})  # fmt: skip
        else:
            span = {"text": answer, "answer_start": context.find(answer)}
            out.append({"question": question, "id": qid, "answers": [span],
                        "is_impossible": False})  # fmt: skip
    return {"context": context, "qas": out}


@pytest.fixture(scope="module")
def squad_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SQuAD v2.0 layout: several paragraphs per title, no document_id, unanswerable questions."""
    data = [
        {"title": "Lighthouse", "paragraphs": [
            _para("The Bell Rock Lighthouse stands off the coast of Angus, Scotland. It was "
                  "built between 1807 and 1810 by Robert Stevenson.",
                  ("Who built the Bell Rock Lighthouse?", "Robert Stevenson", ""),
                  ("Who painted the Bell Rock Lighthouse?", None, "Robert Stevenson")),
            _para("Its light was first lit on 1 February 1811. The keepers lived in the tower, "
                  "which is 35 metres tall.",
                  ("How tall is the tower of the lighthouse?", "35 metres", "")),
            _para("Automation came in 1988, when the last keepers left the rock and the lamp "
                  "began to run without anyone on station.",
                  ("When was the lighthouse automated?", "1988", "")),
        ]},
        {"title": "Sourdough", "paragraphs": [
            _para("Sourdough bread is leavened by a starter of wild yeast and lactic acid "
                  "bacteria instead of baker's yeast.",
                  ("What leavens sourdough bread?", "a starter of wild yeast and lactic acid "
                   "bacteria", "")),
            _para("A starter is fed with flour and water every day and kept at about 24 degrees "
                  "Celsius.",
                  ("At what temperature is a starter kept?", "about 24 degrees Celsius", ""),
                  ("At what temperature is sourdough baked?", None, "24 degrees Celsius")),
        ]},
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("squad2") / "dev-v2.0.json"
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


def test_squad_paragraphs_of_one_title_are_documents_of_their_own(squad_v2: Path) -> None:
    contexts, questions = load_squad(squad_v2)
    raw = json.loads(squad_v2.read_text())["data"]
    paragraphs = [p["context"] for article in raw for p in article["paragraphs"]]
    assert sorted(contexts.values()) == sorted(paragraphs)  # one document per paragraph
    assert len(questions) == 7
    by_source = dict(contexts)
    for article in raw:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                q = next(q for q in questions if q.qid == qa["id"])
                # Every question keeps its own paragraph as the gold passage.
                assert by_source[q.source] == para["context"]
                assert q.impossible == qa["is_impossible"]
                if not q.impossible:
                    start, end = q.spans[0]
                    assert para["context"][start:end] == q.answers[0]
                else:
                    assert q.answers == ()


@pytest.mark.slow
def test_squad_v2_eval_indexes_every_paragraph(
    squad_v2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.index.reader import Store

    index = tmp_path / "idx"
    argv = ["eval", "--squad", str(squad_v2), "--index", str(index), "--json",
            "--max-tokens", "16"]  # fmt: skip
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)["hybrid"]
    assert m["queries"] == 7
    assert m["abstention_recall"] is not None  # the unanswerable questions were counted as such
    with Store.open(index) as store:
        sources = sorted(d.source for d in store.documents())
    contexts, _ = load_squad(squad_v2)
    assert sources == sorted(contexts) and len(sources) == 5
    # Five short paragraphs and at least four passages per question: the gold one is retrieved.
    assert m[_hit_key(m)] == 1.0, m


def test_squad_eval_for_a_served_model_without_its_tokenizer_names_the_flag(
    squad_v2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The evaluation index is chunked for the model that answers; nothing listens at --llm-url,
    and the refusal comes before any question is asked."""
    served = ["--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "llama-2-7b-chat"]
    argv = ["eval", "--squad", str(squad_v2), "--index", str(tmp_path / "idx"), *served]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--tokenizer" in err and "llama-2-7b-chat" in err
    assert not (tmp_path / "idx" / "CURRENT").exists()
