"""The steps of benchmarks/scale.py, each run in a fresh process by the driver: build, add one
document, query; for ours (the public writer, ``RAG.open``/``retrieve``) and for LangChain's FAISS
vector store. A step reads its task (a dict) and returns its figures (a dict).
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scale_corpus import DIM, chunk_text, documents, load_sentences

K = 10  # passages per query, on both sides
MODES = ("dense", "lexical", "hybrid")
WARMUP = 3  # untimed queries per mode: lazy imports, allocator, first FAISS and SQLite calls
EMBEDDER_NAME = "benchmark/random-unit-384"


def rss_peak_mb() -> float:
    """Peak resident set size of this process, in MB (2^20 bytes).

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the process that forked it,
    so a worker would report the driver's peak whenever that is the larger one (measured here:
    both sides read the same 488 MB).
    """
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return float(p50), float(p95)


def _manifest() -> Any:
    from rag.index.manifest import Manifest

    return Manifest(
        embedder=EMBEDDER_NAME,
        dimension=DIM,
        tokenizer="benchmark",
        chunk_tokens=200,
        chunk_overlap=24,
    )


def _add_ours(writer: Any, source: str, texts: Sequence[str], vectors: np.ndarray) -> None:
    from rag.index.docstore import NewChunk

    chunks, start = [], 0
    for text in texts:
        chunks.append(NewChunk(text, None, None, None, start, start + len(text), len(text.split())))
        start += len(text) + 1
    sha = hashlib.sha256(source.encode()).hexdigest()
    writer.add_document(
        source=source,
        sha256=sha,
        kind="text",
        size=start,
        pages=1,
        title=None,
        chunks=chunks,
        vectors=vectors,
    )


def build_ours(task: dict[str, Any]) -> dict[str, Any]:
    from rag.index.writer import open_writer

    pool, n = load_sentences(Path(task["data"])), task["chunks"]
    vectors = np.load(task["vectors"], mmap_mode="r")
    start = time.perf_counter()
    with open_writer(task["index"], _manifest()) as writer:
        for source, row, count in documents(n, task["seed"]):
            texts = [chunk_text(pool, r) for r in range(row, row + count)]
            _add_ours(writer, source, texts, vectors[row : row + count])
        writer.commit()
    return {"build_seconds": time.perf_counter() - start}


def add_ours(task: dict[str, Any]) -> dict[str, Any]:
    import faiss  # noqa: F401  (imported before the clock starts, as a running service has it)

    from rag.index.writer import open_writer

    texts, vectors = task["added_texts"], np.load(task["added"])
    start = time.perf_counter()
    with open_writer(task["index"], _manifest()) as writer:
        _add_ours(writer, "scifact/added.txt", texts, vectors)
        writer.commit()
    return {"add_one_seconds": time.perf_counter() - start}


class PrecomputedEmbedder:
    """Stands in for the embedder: returns each query's precomputed vector. The embedder is
    excluded on purpose (no model loads, no question is embedded): this measures the index."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.name = EMBEDDER_NAME
        self._vectors = dict(zip(texts, vectors, strict=True))

    def embed_query(self, text: str) -> np.ndarray:
        return self._vectors[text]


def query_ours(task: dict[str, Any]) -> dict[str, Any]:
    import faiss  # noqa: F401  (imports are not open time)

    import rag.retrieval.retriever  # noqa: F401  (loaded on the first query otherwise)
    from rag.config import Settings
    from rag.engine import RAG

    queries, qvecs = task["queries"], np.load(task["query_vectors"])
    settings = Settings.model_validate({})
    embedder = PrecomputedEmbedder(queries, qvecs)
    start = time.perf_counter()
    # RAG.open as a user calls it, with the embedder given so that no model is loaded.
    engine = RAG.open(task["index"], settings, embedder=embedder)  # type: ignore[arg-type,unused-ignore]
    out: dict[str, Any] = {"open_seconds": time.perf_counter() - start}
    for mode in MODES:
        for q in queries[:WARMUP]:
            engine.retrieve(q, K, retrieval_mode=mode)
        times, found = [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            cites = engine.retrieve(q, K, retrieval_mode=mode)
            times.append(time.perf_counter() - t0)
            if mode == "dense" and i < task["recall_queries"]:
                found.append([c.text for c in cites])
        out[f"{mode}_p50_ms"], out[f"{mode}_p95_ms"] = percentiles(times)
        if mode == "dense":
            out["dense_texts"] = found
    engine.close()
    out["peak_rss_mb"] = rss_peak_mb()
    return out


def _lc_embeddings() -> Any:
    from langchain_core.embeddings import Embeddings

    class NoEmbeddings(Embeddings):
        """load_local needs an Embeddings object; nothing is embedded here (vectors are given)."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("the scale benchmark passes precomputed vectors")

        def embed_query(self, text: str) -> list[float]:
            raise RuntimeError("the scale benchmark passes precomputed vectors")

    return NoEmbeddings()


def build_langchain(task: dict[str, Any]) -> dict[str, Any]:
    from langchain_community.vectorstores import FAISS

    pool, n = load_sentences(Path(task["data"])), task["chunks"]
    vectors, emb = np.load(task["vectors"], mmap_mode="r"), _lc_embeddings()
    store: Any = None
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    start = time.perf_counter()
    docs = list(documents(n, task["seed"]))
    for d, (source, row, count) in enumerate(docs):
        texts += [chunk_text(pool, r) for r in range(row, row + count)]
        metas += [{"source": source, "seq": s} for s in range(count)]
        if len(texts) >= 10_000 or d == len(docs) - 1:  # in batches, as one would for 1M
            lo = row + count - len(texts)
            pairs = zip(texts, vectors[lo : row + count], strict=True)
            if store is None:
                store = FAISS.from_embeddings(pairs, emb, metadatas=metas)
            else:
                store.add_embeddings(pairs, metadatas=metas)
            texts, metas = [], []
    store.save_local(task["index"])
    return {"build_seconds": time.perf_counter() - start}


def add_langchain(task: dict[str, Any]) -> dict[str, Any]:
    from langchain_community.vectorstores import FAISS

    texts, vectors, emb = task["added_texts"], np.load(task["added"]).tolist(), _lc_embeddings()
    metas = [{"source": "scifact/added.txt", "seq": s} for s in range(len(texts))]
    start = time.perf_counter()
    store = FAISS.load_local(task["index"], emb, allow_dangerous_deserialization=True)
    store.add_embeddings(zip(texts, vectors, strict=True), metadatas=metas)
    store.save_local(task["index"])
    return {"add_one_seconds": time.perf_counter() - start}


def query_langchain(task: dict[str, Any]) -> dict[str, Any]:
    from langchain_community.vectorstores import FAISS

    qvecs = np.load(task["query_vectors"]).tolist()
    start = time.perf_counter()
    store = FAISS.load_local(task["index"], _lc_embeddings(), allow_dangerous_deserialization=True)
    out: dict[str, Any] = {"open_seconds": time.perf_counter() - start}
    for v in qvecs[:WARMUP]:
        store.similarity_search_by_vector(v, k=K)
    times, found = [], []
    for i, v in enumerate(qvecs):
        t0 = time.perf_counter()
        docs = store.similarity_search_by_vector(v, k=K)
        times.append(time.perf_counter() - t0)
        if i < task["recall_queries"]:
            found.append([d.page_content for d in docs])
    out["dense_p50_ms"], out["dense_p95_ms"] = percentiles(times)
    out["dense_texts"] = found
    out["peak_rss_mb"] = rss_peak_mb()
    return out


WORKERS = {
    "build-ours": build_ours,
    "add-ours": add_ours,
    "query-ours": query_ours,
    "build-langchain": build_langchain,
    "add-langchain": add_langchain,
    "query-langchain": query_langchain,
}
