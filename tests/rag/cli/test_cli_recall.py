"""`rag index verify --recall --questions FILE`: the recall of an IVF segment for real questions,
embedded with the index's own embedder, as a user runs it."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from rag.cli import main
from rag.index import vectors
from rag.index.docstore import NewChunk
from rag.index.manifest import Manifest, read_manifest
from rag.index.merging import merge
from rag.index.snapshots import current_snapshot
from rag.index.verify import measure_recall
from rag.index.writer import open_writer
from rag.retrieval.embeddings import Embedder
from tests.conftest import SHARED_DATA

SCIFACT = SHARED_DATA / "scifact" / "derived_beir_style"


@pytest.fixture(scope="module")
def scifact_ivf(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> tuple[Path, list[str]]:
    """An index of 400 SciFact abstracts (their first 300 characters, one chunk each) embedded
    for real, merged into one IVF segment that probes one list of its 80; and 40 of the
    SciFact queries written as a BEIR queries.jsonl."""
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"][:300] for _, line in zip(range(400), fh, strict=False)]
    rows = embedder.embed(texts)
    root = tmp_path_factory.mktemp("recall")
    index = root / "idx"
    manifest = Manifest(
        embedder=embedder.name,
        dimension=embedder.dimension,
        tokenizer="t",
        chunk_tokens=256,
        chunk_overlap=0,
    )
    with open_writer(index, manifest) as w:
        for d in range(0, 400, 10):
            w.add_document(
                source=f"/scifact/{d}.txt",
                sha256=hashlib.sha256(str(d).encode()).hexdigest(),
                kind="text",
                size=1,
                pages=1,
                title=None,
                chunks=[NewChunk(t, None, None, None, 0, len(t), 60) for t in texts[d : d + 10]],
                vectors=rows[d : d + 10],
            )
        w.commit()
    snap = current_snapshot(index)
    with pytest.MonkeyPatch.context() as mp:  # the first nprobe tried is kept: 1
        mp.setattr(vectors, "NPROBE", 1)
        mp.setattr(vectors, "RECALL_TARGET", 0.0)
        merge(index, snap, [s.name for s in read_manifest(snap).segments], ann=True)
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [line for _, line in zip(range(40), fh, strict=False)]
    (root / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    return index, [json.loads(q)["text"] for q in queries]


def test_verify_recall_asks_the_questions_of_a_file(
    scifact_ivf: tuple[Path, list[str]],
    embedder: Embedder,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20, item 4: real questions, one per line or as BEIR's queries.jsonl, embedded with
    the embedder the manifest names; the figure is the segment's recall for those questions."""
    index, questions = scifact_ivf
    text_file = tmp_path / "questions.txt"
    text_file.write_text("\n".join(questions) + "\n\n", encoding="utf-8")
    beir_file = index.parent / "queries.jsonl"
    expected = measure_recall(index, questions=embedder.embed(questions))[0].recall
    for path in (text_file, beir_file):
        code = main(["index", "verify", "--index", str(index), "--questions", str(path), "--json"])
        data = json.loads(capsys.readouterr().out)
        assert code == 0 and data["ok"]
        (r,) = data["recall"]
        assert r["questions"] == "given" and r["queries"] == 40 and r["nprobe"] == 1
        assert r["recall"] == pytest.approx(expected, abs=0.01)
        assert data["questions_file"] == str(path)
    assert 0.2 < expected < 0.95  # one list of 80: a figure that can tell questions apart
    code = main(["index", "verify", "--index", str(index), "--questions", str(text_file)])
    out = capsys.readouterr().out
    assert code == 0 and f"40 questions from {text_file}" in out and "recall@10 " in out
    # Without questions: stored vectors that trained nothing, each left out of its answers.
    code = main(["index", "verify", "--index", str(index), "--recall", "--json"])
    (stored,) = json.loads(capsys.readouterr().out)["recall"]
    assert code == 0 and stored["questions"] == "stored" and stored["queries"] == 40


def test_verify_refuses_a_questions_file_it_cannot_use(
    scifact_ivf: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index, _ = scifact_ivf
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    untexted = tmp_path / "queries.jsonl"
    untexted.write_text('{"_id": "1", "text": "a question"}\n{"_id": "2"}\n', encoding="utf-8")
    for path, says in (
        (empty, "holds no questions: write one question per line"),
        (untexted, "Line 2 of"),
        (tmp_path / "missing.txt", "Cannot read the questions"),
    ):
        code = main(["index", "verify", "--index", str(index), "--questions", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and says in err, err
