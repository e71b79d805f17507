"""benchmarks/nodup_corpus.py and the arithmetic and table of benchmarks/ingest_scale.py."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ATTENTION_PDF, DOCUMENTS, REPO, SHARED_DATA


def _load(name: str) -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load each module by its path.
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


nodup_corpus = _load("nodup_corpus")
ingest_scale = _load("ingest_scale")
ingest_scale_workers = sys.modules["ingest_scale_workers"]  # imported by ingest_scale

SCIFACT = SHARED_DATA / "scifact" / "derived_beir_style"


def _hashes(root: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()]


def test_nodup_corpus_writes_the_pdfs_and_20_abstracts_all_distinct(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    pdfs = sorted((DOCUMENTS / "pdf").glob("*.pdf"))
    assert nodup_corpus.main([str(out), "--abstracts", "20"]) == 0
    hashes = _hashes(out)
    assert len(hashes) == 20 + len(pdfs) == len(set(hashes))
    assert sorted(p.name for p in (out / "pdf").iterdir()) == [p.name for p in pdfs]
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    text = (out / "scifact" / f"{first['_id']}.txt").read_text(encoding="utf-8")
    assert text == f"{first['title']}\n{first['text']}\n"


def test_nodup_corpus_drops_exact_duplicates_and_names_them(tmp_path: Path) -> None:
    documents, scifact = tmp_path / "documents", tmp_path / "scifact"
    (documents / "pdf").mkdir(parents=True)
    shutil.copy(ATTENTION_PDF, documents / "pdf" / "a.pdf")
    shutil.copy(ATTENTION_PDF, documents / "pdf" / "b.pdf")
    (scifact / "qrels").mkdir(parents=True)
    records = [
        {"_id": "1", "title": "T", "text": "Same abstract."},
        {"_id": "2", "title": "T", "text": "Same abstract."},
        {"_id": "3", "title": "U", "text": "Another abstract."},
    ]
    (scifact / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (scifact / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "?"}) + "\n")
    (scifact / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\t1\n")

    report = nodup_corpus.build(tmp_path / "out", None, documents, scifact)
    assert (report.pdfs, report.abstracts, report.distinct_hashes) == (1, 2, 3)
    assert report.dropped == [
        "pdf/b.pdf: same content as pdf/a.pdf",
        "scifact/2.txt: same content as scifact/1.txt",
    ]
    assert len(set(_hashes(tmp_path / "out"))) == 3
    assert "Exact duplicates dropped: 2" in report.summary()


def _run(seconds: float, chunks: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "chunks": chunks,
        "distinct_chunk_texts": chunks,
        "chars_own_count": 1000,
        "files_ingested": 3,
        "files_skipped": [],
        "rss_after_load_mb": 500.0,
        "peak_rss_mb": 800.0,
        "helpers_before_mb": 0.0,
        "helpers_peak_mb": 100.0,
        **extra,
    }


def test_ratios_and_table_on_fixed_numbers() -> None:
    chars = 1000
    runs = {
        "ours_1": [_run(10.0, 100)],
        # medians of three runs: 5 s
        "ours_n": [_run(4.0, 100), _run(5.0, 100), _run(9.0, 100)],
        "ours_ray": [_run(5.5, 100, ray_start_seconds=3.0)],
        "langchain": [_run(20.0, 80)],
        "embedder": [_run(4.0, 90, stored_chunks=100, batch_size=32, runtime="onnx")],
    }
    rows = {k: ingest_scale.summarise(v, chars) for k, v in runs.items()}
    assert rows["ours_n"]["seconds"] == 5.0 and rows["ours_n"]["chars_per_s"] == 200.0
    assert rows["ours_n"]["runs"] == 3

    ratios = ingest_scale.compare(rows)
    assert ratios["ours_1"] == pytest.approx(
        # chars/s 100 over langchain's 50; embedder 4 s of 10 s; 10 chunks/s over 22.5 texts/s
        {"vs_langchain": 2.0, "of_embedder_time": 0.4, "of_embedder_rate": 10 / 22.5}
    )
    assert ratios["ours_n"]["vs_langchain"] == pytest.approx(4.0)
    assert ratios["ours_n"]["of_embedder_time"] == pytest.approx(0.8)
    assert ratios["ray_vs_n"] == pytest.approx({"seconds": 1.1, "target": 1.15, "met": True})
    assert "langchain" not in ratios and "embedder" not in ratios

    result = {
        "corpus": "/c", "files": 3, "source_chars": chars, "repeat": 3, "workers": 2,
        "selected": list(runs), "not_run": {}, "rows": rows, "ratios": ratios,
    }  # fmt: skip
    table = ingest_scale.render(result)
    line = next(ln for ln in table.splitlines() if ln.startswith("ours, 1 worker"))
    assert line.split()[3:] == ["10.00", "100", "100", "10.0", "800", "100", "2.00", "40%", "44%"]
    assert "Ray vs 2 workers: 1.10x the seconds (target <= 1.15: met)." in table
    assert "Ray cluster start (untimed): 3.0 s" in table

    # A row that could not run keeps its place with the reason; ratios need their rows.
    del rows["ours_ray"]
    result.update(not_run={"ours_ray": "n/a (ingest() takes no ray_address)"})
    result["ratios"] = ingest_scale.compare(rows)
    table = ingest_scale.render(result)
    assert "ours on Ray (2)       n/a (ingest() takes no ray_address)" in table
    assert "Ray vs" not in table and "ray_vs_n" not in result["ratios"]


def test_rows_run_in_alternating_order_and_parse() -> None:
    assert ingest_scale.run_order([5, 1, 2], 3) == [1, 2, 5, 5, 2, 1, 1, 2, 5]
    assert ingest_scale.parse_rows("4, 1,2") == [1, 2, 4]
    with pytest.raises(Exception, match="1-5"):
        ingest_scale.parse_rows("0,6")


def test_helper_memory_sees_child_processes() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        with ingest_scale_workers.HelperMemory() as helpers:
            time.sleep(3 * ingest_scale_workers.SAMPLE_S)
        assert child.pid in ingest_scale_workers.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert helpers.most_processes >= 1 and helpers.peak_mb > 0
