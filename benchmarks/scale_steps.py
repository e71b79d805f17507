"""The steps of benchmarks/scale.py, each run in a fresh process by the driver: build, add small
documents one commit at a time, query, optimize; for ours (the public writer,
``RAG.open``/``retrieve``, ``optimize``) and for LangChain's FAISS vector store. A step reads its
task (a dict) and returns its figures (a dict).
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


def rss_now_mb() -> dict[str, float]:
    """Resident memory now, private (RssAnon) and file-backed (RssFile: pages of memory-mapped
    files, which the kernel can drop and processes that map the same file share), in MB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0].lower().replace("rss", "rss_") + "_mb"] = (
                    int(line.split()[1]) / 1024
                )
    return out


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
    """Every chunk in one commit: one segment (IVF from ANN_MIN_VECTORS chunks), as an index
    built by one ingest of a large folder is."""
    from rag.index.writer import open_writer

    pool, n = load_sentences(Path(task["data"])), task["chunks"]
    vectors = np.load(task["vectors"], mmap_mode="r")
    start = time.perf_counter()
    with open_writer(task["index"], _manifest()) as writer:
        for source, row, count in documents(n, task["seed"]):
            texts = [chunk_text(pool, r) for r in range(row, row + count)]
            _add_ours(writer, source, texts, vectors[row : row + count])
        snap = writer.commit(merge=False)
    return {"build_seconds": time.perf_counter() - start, **_layout(snap)}


def _layout(snapshot: Path) -> dict[str, Any]:
    from rag.index.manifest import read_manifest

    segs = read_manifest(snapshot).segments
    return {
        "segments": len(segs),
        "segment_chunks": [s.chunks for s in segs],
        "vector_indexes": [s.vectors.model_dump() for s in segs],
    }


def add_ours(task: dict[str, Any]) -> dict[str, Any]:
    """Each added document in a commit of its own (the default merge policy included): open the
    writer, add, commit, as ``rag ingest`` of one new file does."""
    import cProfile

    import faiss  # noqa: F401  (imported before the clock starts, as a running service has it)
    import tantivy  # noqa: F401

    from rag.index.writer import open_writer

    vectors = np.load(task["added"])
    profile = cProfile.Profile() if task.get("profile") else None
    times, snap = [], None
    for d, texts in enumerate(task["added_texts"]):
        rows = vectors[d * len(texts) : (d + 1) * len(texts)]
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        with open_writer(task["index"], _manifest()) as writer:
            _add_ours(writer, f"scifact/added-{d + 1}.txt", texts, rows)
            snap = writer.commit()
        times.append(time.perf_counter() - start)
        if profile is not None:
            profile.disable()
    if profile is not None:
        profile.dump_stats(task["profile"])
    assert snap is not None
    return {"add_seconds": times, **_layout(snap)}


def optimize_ours(task: dict[str, Any]) -> dict[str, Any]:
    """``rag index optimize`` (every segment merged into one), then ``rag index verify --recall``:
    the recall@10 of each approximate segment on stored vectors used as questions."""
    from rag.index.optimizing import optimize
    from rag.index.snapshots import current_snapshot
    from rag.index.verify import measure_recall

    start = time.perf_counter()
    optimize(task["index"])
    seconds = time.perf_counter() - start
    snap = current_snapshot(Path(task["index"]))
    layout = _layout(snap)
    index_dir = Path(task["index"])
    # The committed snapshot alone: the directory also keeps the one before the merge (and the
    # segments only it lists) for readers that opened it.
    files = [snap, *(index_dir / "segments" / s for s in _segment_names(snap))]
    recall = measure_recall(index_dir, queries=200)
    return {
        "optimize_seconds": seconds,
        "snapshot_bytes": sum(_allocated(p) for p in files),
        "verify_recall": [{"segment": r.segment, "chunks": r.chunks, "recall": r.recall}
                          for r in recall],
        **layout,
    }  # fmt: skip


def _segment_names(snapshot: Path) -> list[str]:
    from rag.index.manifest import read_manifest

    return [s.name for s in read_manifest(snapshot).segments]


def _allocated(path: Path) -> int:
    """Allocated bytes of a file or directory tree, as du counts them."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


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
    out["peak_rss_mb"] = rss_peak_mb()
    out["memory"] = rss_now_mb()
    engine.close()
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
    """Each added document persisted on its own: ``load_local``, ``add_embeddings``,
    ``save_local`` (the persistence LangChain documents for this store)."""
    from langchain_community.vectorstores import FAISS

    vectors, emb = np.load(task["added"]), _lc_embeddings()
    times = []
    for d, texts in enumerate(task["added_texts"]):
        rows = vectors[d * len(texts) : (d + 1) * len(texts)].tolist()
        metas = [{"source": f"scifact/added-{d + 1}.txt", "seq": s} for s in range(len(texts))]
        start = time.perf_counter()
        store = FAISS.load_local(task["index"], emb, allow_dangerous_deserialization=True)
        store.add_embeddings(zip(texts, rows, strict=True), metadatas=metas)
        store.save_local(task["index"])
        times.append(time.perf_counter() - start)
        del store
    return {"add_seconds": times}


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
    out["memory"] = rss_now_mb()
    return out


WORKERS = {
    "build-ours": build_ours,
    "add-ours": add_ours,
    "query-ours": query_ours,
    "optimize-ours": optimize_ours,
    "build-langchain": build_langchain,
    "add-langchain": add_langchain,
    "query-langchain": query_langchain,
}
