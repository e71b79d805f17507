"""The FAISS side of a snapshot: the library, loaded on first use, id selectors for filters, and
single-question search."""

from __future__ import annotations

from typing import Any

import numpy as np


def faiss_module() -> Any:
    import faiss

    return faiss


def bitmap_selector(ids: np.ndarray) -> Any:
    """A faiss selector of chunk ids: one bit per id up to the largest, so it stays small (an
    index of a million chunks takes 125 KB) and costs one bit test per scanned vector."""
    size = int(ids.max()) + 1 if len(ids) else 0
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss_module().IDSelectorBitmap(bitmap)
    selector.bitmap_array = bitmap  # the selector points into this array: keep it alive
    return selector


def search_one(
    index: Any, query: np.ndarray, k: int, params: Any = None
) -> list[tuple[int, float]]:
    """The ``k`` best (id, score) of ``index`` for one query vector, best first.

    FAISS splits even a single query over an OpenMP team of one thread per core. Scanning the
    vectors for one query is cheap next to what that team costs when the cores are shared (by
    the embedder's thread pool, other queries, other processes): measured on 2 cores, one query
    over 100k 384-d vectors took 29 ms with two threads and 9 ms with one, and 0.5 vs 0.3 ms
    over 10k (p95 24 vs 0.6 ms). So one query runs on the calling thread alone; concurrent
    questions still use every core, each on its own thread.
    """
    faiss = faiss_module()
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    # OpenMP keeps the thread count per calling thread: other threads' searches are unaffected.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        scores, ids = index.search(q, k, params=params)
    finally:
        faiss.omp_set_num_threads(before)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
