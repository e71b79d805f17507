"""The engines of benchmarks/lexical_engines.py: how each one's index is built from the same rows,
and how each one answers a question with its ``k`` best chunk ids. Each step runs in a fresh process
(``build`` / ``query``), started by the driver.

SQLite engines share one table layout per storage option (``full`` is today's ``chunks_fts``,
exactly as rag/index/docstore.py creates it) and differ in the query plan; tantivy has its own
index directory.
"""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scale_corpus import chunk_text, load_sentences
from scale_steps import percentiles, rss_peak_mb

from rag.index.lexical import analyzer as en_stem
from rag.index.lexical import fts_query  # imported here: the queries' open time excludes it

WARMUP = 3  # untimed queries: first page reads, lazy imports, allocator

# FTS5 table options per storage: "full" is the index's own table (the FTS5 table of schema 1-2 indexes).
TABLES = {
    "full": "",
    "column": ", detail=column",
    "none": ", detail=none",
    "nocolsize": ", columnsize=0",
}
# engine -> (storage, query plan)
ENGINES = {
    "fts5": ("full", "bm25"),
    "fts5-rank": ("full", "rank"),
    "fts5-per-term": ("full", "per-term"),
    "fts5-detail-column": ("column", "bm25"),
    "fts5-detail-none": ("none", "bm25"),
    "fts5-columnsize0": ("nocolsize", "bm25"),
    "tantivy": ("tantivy", "top-k"),
    "tantivy-count": ("tantivy", "count"),
    "tantivy-fields": ("tantivy-fields", "top-k"),
}
BM25 = "bm25(chunks_fts, 1.0, 1.0)"  # the reader's expression for schema version 2
_WORD = re.compile(r'"([^"]+)"')


def rows(task: dict[str, Any]) -> Iterator[tuple[int, str, str | None]]:
    """(id, text, heading) of every chunk of the task's corpus.

    ``scale``: SciFact sentences, cycled with a copy suffix past the corpus, no heading (as
    benchmarks/scale.py builds them). ``scifact``: one chunk per abstract, text "title\\n\\ntext"
    and heading the title, as ``rag eval --beir`` stores a one-chunk abstract.
    """
    data = Path(task["data"])
    if task["corpus"] == "scale":
        pool = load_sentences(data)
        for i in range(task["chunks"]):
            yield i + 1, chunk_text(pool, i), None
        return
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            d = json.loads(line)
            title = d.get("title") or None
            yield i + 1, (f"{title}\n\n{d['text']}" if title else d["text"]), title


def doc_ids(data: Path) -> list[str]:
    """SciFact document ids in corpus order: chunk id i is doc_ids[i - 1]."""
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [str(json.loads(line)["_id"]) for line in fh]


def build_sqlite(path: Path, storage: str, task: dict[str, Any]) -> None:
    """A chunks table and its FTS5 index, filled the way the writer's trigger fills it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # the same for every variant; build speed is secondary
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, text TEXT NOT NULL, heading TEXT)")
    db.execute(
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, heading, content='chunks', "
        f"content_rowid='id', tokenize='porter unicode61'{TABLES[storage]})"
    )
    batch: list[tuple[int, str, str | None]] = []
    for row in rows(task):
        batch.append(row)
        if len(batch) == 50_000:
            _insert(db, batch)
            batch = []
    _insert(db, batch)
    db.execute("COMMIT")
    db.close()


def _insert(db: sqlite3.Connection, batch: list[tuple[int, str, str | None]]) -> None:
    db.executemany("INSERT INTO chunks(id, text, heading) VALUES (?, ?, ?)", batch)
    # What the chunks_ai trigger does, one statement per batch instead of one per row.
    db.executemany("INSERT INTO chunks_fts(rowid, text, heading) VALUES (?, ?, ?)", batch)


def build_tantivy(path: Path, task: dict[str, Any]) -> None:
    """``tantivy``: text and heading in one field, so that a term's frequency and the length are
    summed over both, as FTS5's bm25() with weights 1, 1 sums them; ``tantivy-fields``: two fields,
    each scored by its own BM25 and the scores added (Lucene's and tantivy's usual way)."""
    import tantivy

    two = task["storage"] == "tantivy-fields"
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("id", stored=False, indexed=False, fast=True)
    sb.add_text_field("text", tokenizer_name="en_stem", index_option="freq")
    if two:
        sb.add_text_field("heading", tokenizer_name="en_stem", index_option="freq")
    path.mkdir(parents=True)
    index = tantivy.Index(sb.build(), path=str(path))
    writer = index.writer(heap_size=256_000_000, num_threads=1)  # one core: others share them
    for i, text, heading in rows(task):
        doc = tantivy.Document(id=i, text=text if two or not heading else f"{text}\n{heading}")
        if two and heading:
            doc.add_text("heading", heading)
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()


def build(task: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    if task["storage"].startswith("tantivy"):
        build_tantivy(Path(task["path"]), task)
    else:
        build_sqlite(Path(task["path"]), task["storage"], task)
    return {"build_seconds": time.perf_counter() - start}


def index_mb(path: Path) -> tuple[float, float]:
    """(full-text index, whole store) in MB: FTS5's shadow tables vs the file with the text."""
    if path.is_dir():
        size = sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 2**20
        return size, size
    db = sqlite3.connect(path)
    fts = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'chunks_fts%'").fetchone()[0]
    db.close()
    return fts / 2**20, path.stat().st_blocks * 512 / 2**20


def words(text: str) -> list[str]:
    """The question's search words exactly as the index chooses them (rag.index.lexical)."""
    match = fts_query(text)
    return _WORD.findall(match) if match else []


def sqlite_searcher(path: Path, plan: str) -> Callable[[str, int], list[int]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    order = "rank" if plan == "rank" else BM25
    sql = f"SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY {order} LIMIT ?"
    one_term = (
        f"SELECT rowid, {BM25} FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?"
    )

    def search(text: str, k: int) -> list[int]:
        match = fts_query(text)
        return [] if match is None else [int(r[0]) for r in db.execute(sql, (match, k))]

    def per_term(text: str, k: int) -> list[int]:
        # bm25() is a sum over the query's terms, so each word's own top k (one term scores
        # cheaper than the OR of all) carries that word's exact share; a chunk's score is the sum
        # of the shares found. Not exact: a share outside its word's top k counts as 0.
        scores: dict[int, float] = {}
        for w in words(text):
            for i, s in db.execute(one_term, (f'"{w}"', k)):
                scores[i] = scores.get(i, 0.0) + s
        return sorted(scores, key=lambda i: scores[i])[:k]  # bm25() is negative: lowest first

    return per_term if plan == "per-term" else search


def tantivy_searcher(path: Path, plan: str, two_fields: bool) -> Callable[[str, int], list[int]]:
    import tantivy

    index = tantivy.Index.open(str(path))
    index.reload()
    searcher, schema, analyzer = index.searcher(), index.schema, en_stem()
    fields = ("text", "heading") if two_fields else ("text",)

    def search(text: str, k: int) -> list[int]:
        # A flat OR of term queries: tantivy prunes a pure disjunction of terms with block-max
        # WAND when it need not count every match (count=False).
        terms = dict.fromkeys(t for w in words(text) for t in analyzer.analyze(w))
        if not terms:
            return []
        clauses = [
            (tantivy.Occur.Should, tantivy.Query.term_query(schema, f, t))
            for t in terms
            for f in fields
        ]
        hits = searcher.search(
            tantivy.Query.boolean_query(clauses), limit=k, count=plan == "count"
        ).hits
        return [int(v) for v in searcher.fast_field_values("id", [a for _, a in hits])]

    return search


def query(task: dict[str, Any]) -> dict[str, Any]:
    """Latency, peak RSS and the ranked ids of one engine, in this fresh process."""
    storage, plan = ENGINES[task["engine"]]
    path = Path(task["path"])
    start = time.perf_counter()
    if storage.startswith("tantivy"):
        search = tantivy_searcher(path, plan, storage == "tantivy-fields")
    else:
        search = sqlite_searcher(path, plan)
    out: dict[str, Any] = {"open_ms": (time.perf_counter() - start) * 1000}
    queries, k = task["queries"], task["k"]
    for q in queries[:WARMUP]:
        search(q, k)
    times, ranked = [], []
    for q in queries:
        t0 = time.perf_counter()
        ids = search(q, k)
        times.append(time.perf_counter() - t0)
        ranked.append(ids)
    out["p50_ms"], out["p95_ms"] = percentiles(times)
    out["max_ms"] = max(times) * 1000
    out["ranked"] = ranked
    out["peak_rss_mb"] = rss_peak_mb()
    return out


WORKERS = {"build": build, "query": query}
