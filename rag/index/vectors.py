"""The vectors of an index: FAISS loaded on first use, id selectors for filters, single-question
search, and the vector files of a segment (exact or IVF)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def faiss_module() -> Any:
    import faiss

    return faiss


def bitmap_selector(ids: np.ndarray) -> Any:
    """A faiss selector of ids: one bit per id up to the largest, so it stays small (a million
    ids take 125 KB) and costs one bit test per scanned vector."""
    size = int(ids.max()) + 1 if len(ids) else 0
    mask = np.zeros(size, dtype=bool)
    mask[ids] = True
    return mask_selector(mask)


def mask_selector(mask: np.ndarray) -> Any:
    """A faiss selector of the positions where the bool array ``mask`` is set."""
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


def search_ivf(
    index: Any, query: np.ndarray, k: int, nprobe: int, sel: Any = None
) -> list[tuple[int, float]]:
    """The ``k`` best (id, score) of an IVF ``index`` for one query, probing ``nprobe`` lists, or
    every list when those hold fewer than ``k`` rows (that ``sel`` allows).

    The lists nearest the question can hold fewer than k allowed rows: the rows a filter allows
    may all lie in lists far from it, and small lists hold fewer than k rows in all. Then the
    allowed rows lie away from the question, where the order of the centroids says little about
    theirs: probing four times more lists at a time until k turned up found k rows, but only
    0.64 of the right ones on the two topics of tests/rag/index/test_vectors.py. So every list
    is probed, which is exact over the allowed rows. Cost: a search that finds k at once costs what it did; a short
    one adds one pass over the index that computes a distance only for allowed rows (a bit test
    for the others): at 1M 384-d rows 6 ms with 1% allowed, 22 ms with 10%, 58 ms with all
    (benchmarks/README.md, the ANN choice), about an exact scan of the allowed rows.
    """
    faiss = faiss_module()
    nlist = int(index.nlist)
    hits = search_one(
        index, query, k, faiss.SearchParametersIVF(sel=sel, nprobe=min(nprobe, nlist))
    )
    if len(hits) >= k or nprobe >= nlist:
        return hits
    return search_one(index, query, k, faiss.SearchParametersIVF(sel=sel, nprobe=nlist))


# -- the vectors of a segment --
#
# A segment keeps its vectors in one of two files, both memory-mapped when opened, so opening an
# index reads no vector into RAM:
#
# * ``vectors.npy`` (flat, exact): row i is the vector of the segment's i-th chunk (``ids.npy``).
#   One question costs one matrix-vector product over the rows (3.5 ms per 100k 384-d vectors on
#   one core).
# * ``vectors.ivf`` (ivf_flat, approximate): a FAISS IndexIVFFlat whose ids are row numbers, with
#   a direct map so that any row can be read back. Chosen for segments of at least
#   ANN_MIN_VECTORS vectors, with nlist = 4 sqrt(N) and nprobe from 64 up, measured at build time
#   until recall@10 reaches RECALL_TARGET (benchmarks/ann_choice.py: 0.976-0.977 at 1M and
#   nprobe 64 in 1.3 ms on real embeddings). With a filter, nprobe grows with how little of the
#   segment the filter allows, and below 1% the allowed rows are scanned exactly. A search whose
#   probed lists hold fewer than k allowed rows (a filter on documents about another topic, or
#   lists smaller than k) probes every list: exact over the allowed rows (search_ivf).

FLAT_FILE = "vectors.npy"
IVF_FILE = "vectors.ivf"
ANN_MIN_VECTORS = 100_000
NPROBE = 64  # the first nprobe tried; write_ivf raises it until RECALL_TARGET is met
RECALL_TARGET = 0.95  # recall@10 against exact search that an approximate segment must reach
CALIBRATION_QUERIES = 200  # held-out stored vectors asked to choose nprobe (held_out_rows)
TIE_TOLERANCE = 1e-5  # an answer this close to the k-th exact score ties with it (rounding)
MAX_PROBED_SHARE = 0.25  # an IVF index that must probe more of its lists is not built
FILTER_NPROBE_FACTOR = 4  # 1% <= allowed share < 10%: 4 x nprobe (256 at 64: recall 0.968 at 1%)
EXACT_BELOW = 0.01  # allowed share under which the allowed rows are scanned exactly


def ivf_nlist(n: int) -> int:
    return max(1, int(4 * np.sqrt(n)))


def write_flat(path: Path, vectors: Any) -> None:
    """``vectors``: an array, or a stand-in read by row slices (``shape``, ``x[lo:hi]``)."""
    n, d = vectors.shape
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for lo in range(0, n, 100_000):
        out[lo : lo + 100_000] = vectors[lo : lo + 100_000]
    out.flush()
    del out


@dataclass(frozen=True)
class IvfBuild:
    """What :func:`write_ivf` built: lists, the nprobe it chose, and the recall it measured."""

    nlist: int
    nprobe: int
    recall: float


def write_ivf(path: Path, vectors: Any) -> IvfBuild | None:
    """Train and fill an IVFFlat index over ``vectors`` (ids = row numbers) and choose its nprobe.

    Rows are read in batches, so a memory-mapped input is never read into RAM whole. nprobe is
    not assumed: it is the smallest of NPROBE, 2 NPROBE, 4 NPROBE, ... whose recall@10 against
    exact search reaches RECALL_TARGET, measured with held-out rows as questions (see
    :func:`held_out_rows`). Real embeddings cluster and stop at 64 (0.976 at 1M,
    benchmarks/ann_choice.py); vectors without structure need many more lists, and get them
    instead of a silent loss of recall. None (and no file) when that is over MAX_PROBED_SHARE
    of the lists: the caller scans exactly.
    """
    faiss = faiss_module()
    x = vectors
    n, d = x.shape
    nlist = ivf_nlist(n)
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    picked = training_rows(n, nlist)
    index.train(np.ascontiguousarray(x[picked], dtype=np.float32))
    for lo in range(0, n, 100_000):
        index.add(np.ascontiguousarray(x[lo : lo + 100_000], dtype=np.float32))
    index.make_direct_map(True)
    nprobe, recall = _calibrate(index, x, nlist, held_out_rows(n, nlist, CALIBRATION_QUERIES))
    if nprobe > max(NPROBE, nlist * MAX_PROBED_SHARE):
        # Vectors without clusters (random ones): the lists that reach the target hold most of
        # the rows, and probing them costs more than the exact scan it approximates.
        log.warning(
            "These %d vectors have no cluster structure: an IVF index would need %d of %d lists "
            "for recall@10 %.2f; they are searched exactly instead.",
            n, nprobe, nlist, RECALL_TARGET,
        )  # fmt: skip
        return None
    faiss.write_index(index, str(path))
    return IvfBuild(nlist=nlist, nprobe=nprobe, recall=recall)


def training_rows(n: int, nlist: int) -> np.ndarray:
    """The rows whose k-means places the centroids of an IVF index of ``n`` rows: 64 per list
    at most (plenty; FAISS warns under 39), never the rows :func:`held_out_rows` keeps out."""
    if n > 64 * nlist:
        # Drawn as before held-out rows existed, so the held-out rows of a segment built then
        # are still known: every row outside this sample.
        return np.sort(np.random.default_rng(0).choice(n, 64 * nlist, replace=False))
    return np.setdiff1d(np.arange(n), _kept_out(n, nlist))


def _kept_out(n: int, nlist: int) -> np.ndarray:
    """Of a segment too small for a training sample, the rows that do not train it: a tenth,
    at most CALIBRATION_QUERIES, so that at least nlist rows remain to train on."""
    count = max(0, min(CALIBRATION_QUERIES, n // 10, n - nlist))
    return np.sort(np.random.default_rng(1).choice(n, count, replace=False))


def held_out_rows(n: int, nlist: int, count: int, seed: int = 1) -> np.ndarray:
    """Up to ``count`` rows of an IVF index of ``n`` rows that did not train its centroids, to
    be asked as questions, each left out of its own answers (:func:`recall_at_k`).

    Why not any stored row: a stored row is its own nearest neighbour and lies in the first list
    probed, so it was a free hit (up to 0.1 of recall@10); and a row that trained the centroids
    sits where k-means fitted a list around it, closer to its neighbours' list than a new
    question would be. Left out of its answers but with the centroids trained on it, a row
    still overstated recall by 0.02-0.07 at low nprobe on clustered vectors; a row that trained
    nothing matched questions drawn like the rows but not stored to within 0.01
    (tests/rag/index/test_recall.py; benchmarks/ivf_recall.py for SciFact). Questions people
    ask lie further from the chunks than chunks from each other, and get less: measure them
    with ``rag index verify --recall --questions FILE``."""
    pool = (
        np.setdiff1d(np.arange(n), training_rows(n, nlist))
        if n > 64 * nlist
        else _kept_out(n, nlist)
    )
    if len(pool) <= count:
        return pool
    return np.sort(np.random.default_rng(seed).choice(pool, count, replace=False))


def _calibrate(
    index: Any, x: Any, nlist: int, picked: np.ndarray, k: int = 10
) -> tuple[int, float]:
    n = x.shape[0]
    queries = np.ascontiguousarray(x[picked], dtype=np.float32)
    batches = (x[lo : lo + 100_000] for lo in range(0, n, 100_000))
    truth, _ = exact_top(queries, batches, k, exclude=picked)
    nprobe = min(NPROBE, nlist)
    while True:
        # Searched as a segment searches (search_ivf), so the figure is that of its answers.
        answers = [search_ivf(index, q, min(k + 1, n), nprobe) for q in queries]
        recall = recall_at_k(answers, truth, exclude=picked)
        if recall >= RECALL_TARGET or nprobe >= nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, nlist)


def exact_top(
    queries: np.ndarray, batches: Iterable[Any], k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the exact top ``k`` rows per query (inner product), best first,
    by one pass over the rows in ``batches``; ``exclude``: a row per query left out (the row the
    query is, when stored vectors are asked). Short of ``k`` rows: scores -inf, rows -1."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_p = np.full((len(queries), k), -1, dtype=np.int64)
    lo = 0
    for batch in batches:
        rows = np.asarray(batch, dtype=np.float32)
        scores = queries @ rows.T
        if exclude is not None:
            own = np.flatnonzero((exclude >= lo) & (exclude < lo + len(rows)))
            scores[own, exclude[own] - lo] = -np.inf
        all_s = np.concatenate([best_s, scores], axis=1)
        pos = np.broadcast_to(np.arange(lo, lo + len(rows)), scores.shape)
        all_p = np.concatenate([best_p, pos], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_p = np.take_along_axis(all_p, top, axis=1)
        lo += len(rows)
    best_p[~np.isfinite(best_s)] = -1
    return best_s, best_p


def recall_at_k(
    answers: Sequence[Sequence[tuple[int, float]]],
    truth: np.ndarray,
    exclude: np.ndarray | None = None,
) -> float:
    """recall@k of approximate ``answers`` ((row, score) per query, best first) against the exact
    top-k scores ``truth`` (from :func:`exact_top`, k = its width).

    An answer counts when it scores at least the k-th exact score: a row tied with it (an
    identical vector, a chunk stored twice) belongs in the top k as much as the one the exact
    scan happened to keep, and matching row numbers made such ties misses at random. The
    query's own row (``exclude``) is neither expected nor counted: a stored vector's nearest row
    is itself, which an IVF search always finds (its list is the first probed), so counting it
    added up to 1/k (0.1 at k = 10) to the figure whatever the other nine were.
    """
    hits = expected = 0
    for i, (found, scores) in enumerate(zip(answers, truth, strict=True)):
        valid = scores[np.isfinite(scores)]  # fewer than k rows in a small segment
        if not len(valid):
            continue
        kth = float(valid[-1])
        own = -1 if exclude is None else int(exclude[i])
        got = [v for p, v in found if p != own][: len(valid)]
        hits += sum(v >= kth - TIE_TOLERANCE * max(1.0, abs(kth)) for v in got)
        expected += len(valid)
    return hits / expected if expected else 1.0


class SegmentVectors:
    """The vectors of one segment, memory-mapped; rows are addressed by position."""

    def __init__(
        self,
        directory: Path | None,
        dimension: int,
        nprobe: int = NPROBE,
        rows: np.ndarray | None = None,
    ) -> None:
        """Open the vector file in ``directory``, or search ``rows`` (an array) when given."""
        self.nprobe = nprobe
        self._ivf: Any = None
        self._flat: np.ndarray | None = None
        if rows is not None:
            self._flat = rows
            self.count, self.dimension = len(rows), dimension
        elif directory is None:
            raise ValueError("a directory or rows are required")
        elif (directory / IVF_FILE).exists():
            faiss = faiss_module()
            self._ivf = faiss.read_index(str(directory / IVF_FILE), faiss.IO_FLAG_MMAP)
            self.count = int(self._ivf.ntotal)
            self.dimension = int(self._ivf.d)
        else:
            self._flat = np.load(directory / FLAT_FILE, mmap_mode="r")
            self.count, self.dimension = (int(x) for x in self._flat.shape)
        if self.count and self.dimension != dimension:
            raise ValueError(f"vectors have dimension {self.dimension}, expected {dimension}")

    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at ``positions``, as float32 rows."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._flat is not None:
            return np.asarray(self._flat[positions], dtype=np.float32)
        if not len(positions):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._ivf.reconstruct_batch(positions), dtype=np.float32)

    def all_rows(self, batch: int = 100_000) -> Iterator[np.ndarray]:
        for lo in range(0, self.count, batch):
            yield self.rows(np.arange(lo, min(lo + batch, self.count)))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None, allowed_count: int
    ) -> list[tuple[int, float]]:
        """The ``k`` best (position, score), best first, among rows where ``allowed`` (a bool
        mask over positions, None for all) is set; ``allowed_count`` is its number of rows."""
        k = min(k, allowed_count)
        if k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if self._ivf is None or (allowed is not None and allowed_count < EXACT_BELOW * self.count):
            return self._exact(q, k, allowed)
        nprobe = self.nprobe
        if allowed is not None and allowed_count < 0.1 * self.count:
            nprobe = FILTER_NPROBE_FACTOR * nprobe
        sel = None if allowed is None else mask_selector(allowed)
        return search_ivf(self._ivf, q, k, nprobe, sel)

    def _exact(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if self._flat is not None:
            # One pass over every row, then the disallowed ones are ruled out: cheaper than
            # gathering the allowed rows when most of the segment is allowed.
            scores = inner_products(self._flat, q)
            if allowed is not None:
                scores[~allowed] = -np.inf
            top = _top_k(scores, k)
            return [(int(t), float(scores[t])) for t in top if np.isfinite(scores[t])]
        # An IVF segment with a filter that allows under 1% of it: read back only those rows.
        positions = np.flatnonzero(allowed) if allowed is not None else np.arange(self.count)
        scores = inner_products(self.rows(positions), q)
        top = _top_k(scores, k)
        return [(int(positions[t]), float(scores[t])) for t in top]


def inner_products(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``rows @ q`` on the calling thread alone: FAISS's SIMD loop, where NumPy's BLAS would start
    a thread team for one question (the cost search_one avoids for FAISS indexes)."""
    faiss = faiss_module()
    rows = np.ascontiguousarray(rows, dtype=np.float32)  # a mapped .npy file is used in place
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.float32)
    if len(rows):
        ptr = faiss.swig_ptr
        faiss.fvec_inner_products_ny(ptr(out), ptr(q), ptr(rows), q.shape[0], len(rows))
    return out


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the ``k`` largest scores, largest first (ties by lower index)."""
    part = np.arange(len(scores)) if k >= len(scores) else np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]
