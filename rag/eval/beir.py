"""Retrieval evaluation on BEIR-format data sets (corpus.jsonl[.gz], queries.jsonl, qrels/test.tsv).

The corpus is ingested through the normal pipeline (so the numbers measure the product, chunking
included) into an index cached by content and settings; a document's score is the best score of
its chunks.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError
from rag.eval.cache import cached_index, eval_index_dir

log = logging.getLogger(__name__)

MODES = ("dense", "lexical", "hybrid")
# Chunks fetched per query, enough to rank 100 distinct documents when documents have 2-3 chunks.
CHUNK_DEPTH = 400


@dataclass(frozen=True)
class BeirData:
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(root: str | Path, split: str = "test") -> BeirData:
    root = Path(root)
    corpus = next(
        (p for p in (root / "corpus.jsonl", root / "corpus.jsonl.gz") if p.exists()), None
    )
    qrels_path = root / "qrels" / f"{split}.tsv"
    if corpus is None or not (root / "queries.jsonl").exists() or not qrels_path.exists():
        raise ConfigError(
            f"{root} is not a BEIR data set: it needs corpus.jsonl[.gz], queries.jsonl and "
            f"qrels/{split}.tsv."
        )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            score = int(row["score"])
            if score > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = score
    queries = {}
    for line in (root / "queries.jsonl").open(encoding="utf-8"):
        q = json.loads(line)
        if str(q["_id"]) in qrels:
            queries[str(q["_id"])] = q["text"]
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def iter_corpus(path: Path) -> Iterator[dict[str, Any]]:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def build_index(
    data: BeirData, settings: Settings, progress: Any = None, index: Path | None = None
) -> Path:
    """Ingest the corpus into ``index`` (default: a cache directory keyed by corpus and settings),
    unless it is already there."""
    from ingest import TextDocument

    def documents() -> Iterator[Any]:
        for d in iter_corpus(data.corpus):
            text = f"{d['title']}\n\n{d['text']}" if d.get("title") else d["text"]
            yield TextDocument(source=str(d["_id"]), text=text, title=d.get("title") or None)

    name = data.corpus.parent.name or "beir"
    index = index or eval_index_dir(name, data.corpus, settings)
    return cached_index(index, documents, settings, progress)


def ndcg_at(ranked: list[str], rel: dict[str, int], k: int) -> float:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rel.values(), reverse=True)[:k]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rel: dict[str, int], k: int) -> float:
    return len(set(ranked[:k]) & set(rel)) / len(rel) if rel else 0.0


def mrr_at(ranked: list[str], rel: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if d in rel:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_beir(
    root: str | Path,
    settings: Settings,
    modes: tuple[str, ...] = MODES,
    limit: int | None = None,
    progress: Any = None,
    index_dir: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per retrieval mode: ndcg@10, recall@10, recall@100, mrr@10, plus timings."""
    from rag.index.reader import Store
    from rag.retrieval.embeddings import Embedder
    from rag.retrieval.retriever import Retriever

    data = load_beir(root)
    started = time.perf_counter()
    index = build_index(data, settings, progress, index_dir)
    build_seconds = time.perf_counter() - started
    qids = sorted(data.queries, key=lambda q: (len(q), q))[:limit] if limit else list(data.queries)
    results: dict[str, dict[str, float]] = {}
    with Store.open(index) as store:
        embedder = Embedder.from_settings(settings, store.manifest.embedder)
        for mode in modes:
            retriever = Retriever(
                store=store,
                embedder=embedder,
                mode=mode,
                fetch_k=CHUNK_DEPTH,
                hybrid_alpha=settings.hybrid_alpha,
            )
            t0 = time.perf_counter()
            sums = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
            for qid in qids:
                ranked = _documents(retriever.search(data.queries[qid], CHUNK_DEPTH))
                rel = data.qrels[qid]
                sums["ndcg@10"] += ndcg_at(ranked, rel, 10)
                sums["recall@10"] += recall_at(ranked, rel, 10)
                sums["recall@100"] += recall_at(ranked, rel, 100)
                sums["mrr@10"] += mrr_at(ranked, rel, 10)
            n = max(len(qids), 1)
            metrics = {k: round(v / n, 4) for k, v in sums.items()}
            metrics["queries"] = len(qids)
            metrics["seconds"] = round(time.perf_counter() - t0, 2)
            results[mode] = metrics
    results["_run"] = {"index_seconds": round(build_seconds, 1), "documents": _count(index)}
    return results


def _documents(hits: list[Any]) -> list[str]:
    """Documents in order of their best chunk."""
    seen: dict[str, None] = {}
    for record, _score, _similarity in hits:
        seen.setdefault(record.source, None)
    return list(seen)


def _count(index: Path) -> float:
    from rag.index.reader import Store

    with Store.open(index) as store:
        return float(store.counts()[0])
