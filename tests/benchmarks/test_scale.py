"""benchmarks/scale.py end to end, capped small: both sides measured, every named figure there."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_DATA

# benchmarks/ is a folder of scripts, not a package: load the data module by its path.
_spec = importlib.util.spec_from_file_location(
    "scale_corpus", REPO / "benchmarks" / "scale_corpus.py"
)
assert _spec is not None and _spec.loader is not None
scale_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_corpus)

SCIFACT = SHARED_DATA / "scifact" / "derived_beir_style"
KEYS = {
    "side", "chunks", "add_one_seconds", "open_seconds", "dense_p50_ms", "dense_p95_ms",
    "lexical_p50_ms", "lexical_p95_ms", "hybrid_p50_ms", "hybrid_p95_ms", "recall_at_10",
    "peak_rss_mb", "disk_mb",
}  # fmt: skip


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"SciFact not found at {SCIFACT}")
def test_scale_benchmark_writes_both_sides_with_the_named_keys(tmp_path: Path) -> None:
    out, details = tmp_path / "scale.json", tmp_path / "details.json"
    # Real parts throughout: real SciFact text, the real writer, FAISS and LangChain's store.
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--max-chunks", "2000",
         "--adds", "3", "--json", str(out), "--details", str(details),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text("utf-8"))
    assert [(r["side"], r["chunks"]) for r in rows] == [("ours", 2000), ("langchain", 2000)]
    for row in rows:
        assert set(row) == KEYS
        for mode in ("dense", "lexical", "hybrid"):
            if row["side"] == "langchain" and mode != "dense":
                assert row[f"{mode}_p50_ms"] is None and row[f"{mode}_p95_ms"] is None
                continue
            assert 0 < row[f"{mode}_p50_ms"] <= row[f"{mode}_p95_ms"]
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert row["add_one_seconds"] > 0 and row["open_seconds"] > 0
        assert row["peak_rss_mb"] > 10 and row["disk_mb"] > 0.1
    # LangChain's store searches exactly (IndexFlatL2 over unit vectors ranks as inner product),
    # so it must agree with the benchmark's own exact search: a check of the recall harness.
    assert rows[1]["recall_at_10"] >= 0.99
    # Under ANN_MIN_VECTORS every segment of ours is exact too.
    assert rows[0]["recall_at_10"] >= 0.99
    assert "ours/langchain" in proc.stdout
    ours, lc = json.loads(details.read_text("utf-8"))
    # One segment built, then one per added document (3 small segments: below the merge tier).
    assert ours["built"]["segments"] == 1 and ours["added"]["segments"] == 4
    assert len(ours["added"]["add_seconds"]) == len(lc["added"]["add_seconds"]) == 3
    assert rows[0]["add_one_seconds"] == sorted(ours["added"]["add_seconds"])[1]
    # optimize merges them back into one segment, and the committed snapshot alone is smaller
    # than the directory, which keeps the snapshot before the merge for its readers.
    opt = ours["optimized"]
    assert opt["segments"] == 1 and opt["segment_chunks"] == [2000 + 3 * 5]
    assert 0 < opt["snapshot_mb"] < opt["disk_mb"]
    assert opt["verify_recall"] == []  # no approximate segment at this size
    assert lc["optimized"] is None


def test_chunks_are_distinct_when_the_corpus_is_cycled() -> None:
    """Sizes beyond the corpus reuse its sentences with a suffix, so every chunk text differs
    (recall compares texts, and the retriever collapses equal ones)."""
    pool = ["first sentence of the corpus.", "second sentence of the corpus."]
    texts = [scale_corpus.chunk_text(pool, r) for r in range(7)]
    assert len(set(texts)) == 7 and texts[:2] == pool
    docs = list(scale_corpus.documents(1000, seed=0))
    assert all(5 <= count <= 20 for _, _, count in docs[:-1])
    assert [row for _, row, _ in docs] == list(np.cumsum([0] + [c for *_, c in docs[:-1]]))
    assert sum(c for *_, c in docs) == 1000


def test_added_documents_are_distinct_unit_vectors() -> None:
    pool = [f"sentence number {i} of the corpus." for i in range(50)]
    docs = scale_corpus.added_documents(pool, seed=0, count=4)
    texts = [t for ts, _ in docs for t in ts]
    assert [len(ts) for ts, _ in docs] == [5] * 4 and len(set(texts)) == 20
    vectors = np.concatenate([v for _, v in docs])
    assert vectors.shape == (20, scale_corpus.DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # With the sentences' own vectors, each added chunk lies near its sentence's vector.
    base = scale_corpus.unit(np.random.default_rng(2).standard_normal((50, scale_corpus.DIM)))
    near = scale_corpus.added_documents(pool, seed=0, count=4, base=base)
    for ts, vs in near:
        rows = [pool.index(t.rsplit(" [added", 1)[0]) for t in ts]
        assert np.all(np.einsum("ij,ij->i", vs, base[rows]) > 0.9)


def test_exact_top_k_matches_a_full_sort() -> None:
    rng = np.random.default_rng(1)
    vectors = scale_corpus.unit(rng.standard_normal((300, scale_corpus.DIM)))
    extra = scale_corpus.unit(rng.standard_normal((5, scale_corpus.DIM)))
    queries = np.concatenate([extra[:2], vectors[:3]])
    rows = scale_corpus.exact_top_k(vectors, 300, extra, queries, 10)
    scores = queries @ np.concatenate([vectors, extra]).T
    expected = np.argsort(-scores, axis=1)[:, :10]
    assert [set(r) for r in rows.tolist()] == [set(e) for e in expected.tolist()]
    assert rows[0].tolist().count(300) == 1 and rows[2].tolist().count(0) == 1
