"""The data of benchmarks/ann_choice.py: real embeddings of SciFact sentences (cached), grown to any
size by seeded noisy copies, the SciFact queries embedded for real, filters, and exact search.

ANN recall depends on how the vectors cluster: uniform random 384-d vectors have no neighbours
worth the name and make every ANN index look bad, so the stored vectors here come from the real
embedder (all-MiniLM-L6-v2, ONNX) and only the copies beyond the corpus are synthetic.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scale_corpus import DIM, load_queries, load_sentences, unit

BLOCK = 5_000  # sentences embedded and cached per file, so an interrupted run keeps its progress
COPY_NOISE = 0.4  # copy = real vector + 0.4 * random unit vector: cosine 1/sqrt(1.16) = 0.93
DOC_SPAN = 16  # filters select whole runs of 16 consecutive ids, as a document's chunks are


def _embedder() -> Any:  # the toolkit's Embedder, imported only when embedding
    from rag.retrieval.embeddings import Embedder

    return Embedder()


def base_vectors(data: Path, workdir: Path, limit: int) -> np.ndarray:
    """Embeddings of the first ``limit`` SciFact sentences, embedded once and cached as .npy."""
    sentences = load_sentences(data)[:limit]
    cache = workdir / "embeddings"
    cache.mkdir(parents=True, exist_ok=True)
    blocks: list[np.ndarray] = []
    embedder = None
    for lo in range(0, len(sentences), BLOCK):
        part = sentences[lo : lo + BLOCK]
        path = cache / f"scifact-{lo:07d}-{len(part)}.npy"
        if not path.exists():
            embedder = embedder or _embedder()
            start = time.perf_counter()
            vectors = embedder.embed(part, batch_size=64)
            np.save(path, vectors)
            print(
                f"  embedded sentences {lo:,}-{lo + len(part):,} of {len(sentences):,} "
                f"in {time.perf_counter() - start:.1f} s ({embedder.active_runtime})",
                file=sys.stderr,
                flush=True,
            )
        blocks.append(np.load(path))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def grown(base: np.ndarray, n: int, seed: int, noise: float = COPY_NOISE) -> np.ndarray:
    """``n`` unit vectors: ``base`` itself, then noisy re-normalised copies of it (seeded): each
    copy is a real vector plus ``noise`` times a random unit vector."""
    out = np.empty((n, DIM), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for lo in range(0, n, len(base)):
        hi = min(n, lo + len(base))
        rows = base[: hi - lo]
        if lo == 0:
            out[lo:hi] = rows
        else:
            jitter = unit(rng.standard_normal((hi - lo, DIM), dtype=np.float32))
            out[lo:hi] = unit(rows + noise * jitter)
    return out


def query_vectors(data: Path, workdir: Path) -> np.ndarray:
    """The SciFact queries, embedded for real (cached)."""
    path = workdir / "embeddings" / "scifact-queries.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, _embedder().embed(load_queries(data, None), batch_size=64))
    return np.load(path)


def filter_ids(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted ids matching a filter that keeps about ``fraction`` of the chunks, by document."""
    rng = np.random.default_rng(seed + int(fraction * 1000))
    spans = rng.random((n + DOC_SPAN - 1) // DOC_SPAN) < fraction
    mask = np.repeat(spans, DOC_SPAN)[:n]
    return np.flatnonzero(mask).astype(np.int64)


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Ids of the ``k`` best inner products per query by brute force, over ``allowed`` ids only
    when given."""
    ids = np.arange(len(vectors)) if allowed is None else allowed
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for lo in range(0, len(ids), 65_536):
        block_ids = ids[lo : lo + 65_536]
        block = vectors[block_ids] if allowed is not None else vectors[lo : lo + 65_536]
        s = np.concatenate([best_s, queries @ block.T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(block_ids, (len(queries), len(block_ids)))], 1)
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if s.shape[1] > k else np.argsort(-s, 1)
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k found in its ANN top-k."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / truth.shape[1]
