"""Which FAISS index should large segments use? Exact, HNSW and IVF side by side, measured.

    python benchmarks/ann_choice.py [--sizes 100000 1000000] [--workdir DIR] [--json OUT]

Stored vectors: SciFact sentences embedded once with the toolkit's embedder (all-MiniLM-L6-v2,
ONNX; cached under --workdir), grown to each size by noisy re-normalised copies; queries: the 300
SciFact queries embedded for real. For each index type and parameter: build time (all cores), size
on disk and in RAM, single-query p50/p95 latency on one thread (as rag.index.vectors.search_one
searches), recall@10 against exact search on the same vectors, the same three with an
IDSelectorBitmap filter matching 1%, 10% and 50% of the ids, and, in a fresh process per index,
open time and RSS with and without IO_FLAG_MMAP. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ann_data import (
    COPY_NOISE,
    base_vectors,
    exact_top_k,
    filter_ids,
    grown,
    query_vectors,
    recall_at_k,
)

from rag.index.vectors import bitmap_selector, faiss_module

K = 10
FRACTIONS = (0.01, 0.1, 0.5)
FALLBACK_MAX = 0.1  # exact search over the allowed ids is the fallback for selective filters only
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/scifact/derived_beir_style"
MB = 2**20

# The open/mmap measurement, in a fresh process so that RSS is that index's alone.
_OPEN_WORKER = r"""
import json, sys, time, numpy as np, faiss
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon")}
def delta(now, was):
    return {k: now[k] - was[k] for k in now}
path, flag, qpath = sys.argv[1], int(sys.argv[2]), sys.argv[3]
queries = np.load(qpath)
faiss.omp_set_num_threads(1)
before = rss()
start = time.perf_counter()
index = faiss.read_index(path, flag)
opened = time.perf_counter() - start
after_open = delta(rss(), before)
# The search settings the tables recommend, not faiss's defaults (nprobe 1 touches too little).
if hasattr(index, "nprobe"):
    index.nprobe = 64
if hasattr(index, "hnsw"):
    index.hnsw.efSearch = 128
for q in queries:
    index.search(q[None], 10)
after = delta(rss(), before)
print(json.dumps({"open_seconds": opened, "rss_open_mb": after_open["VmRSS"],
                  "anon_open_mb": after_open["RssAnon"], "rss_after_queries_mb": after["VmRSS"],
                  "anon_after_queries_mb": after["RssAnon"], "type": type(index).__name__}))
"""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> dict[str, Any]:
    """p50/p95 ms of one query at a time, and the ids found."""
    for q in queries[:5]:
        search(q)  # warm caches and lazily built tables, untimed
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        ids = search(q)
        times.append(time.perf_counter() - start)
        found.append(np.pad(ids, (0, K - len(ids)), constant_values=-1))
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "ids": np.array(found),
    }


def faiss_search(index: Any, params_for: Callable[[Any], Any]) -> Callable[..., np.ndarray]:
    def search(q: np.ndarray, sel: Any = None) -> np.ndarray:
        _, ids = index.search(q[None], K, params=params_for(sel))
        return ids[0]

    return search


def all_cores() -> None:
    """Builds use every core (searches are timed on one)."""
    faiss_module().omp_set_num_threads(os.cpu_count() or 1)


def builds(n: int, vectors: np.ndarray, args: argparse.Namespace) -> Any:
    """(name, build parameters, index, build seconds, search sweep) per index type, one at a time
    so that only one candidate is held in memory."""
    faiss = faiss_module()
    ip = faiss.METRIC_INNER_PRODUCT
    d = vectors.shape[1]
    families = set(args.families)
    if "flat" in families:
        all_cores()
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(d)
        flat.add(vectors)
        yield "Flat", "exact", flat, time.perf_counter() - start, [("-", faiss.SearchParameters)]
    hnsw_kinds = [("HNSWFlat", None)] if "hnsw" in families else []
    if "hnswsq" in families:
        hnsw_kinds.append(("HNSWSQ8", faiss.ScalarQuantizer.QT_8bit))
    for name, qtype in hnsw_kinds:
        for m, ef_c in args.hnsw if qtype is None else args.hnsw[:1]:
            all_cores()
            start = time.perf_counter()
            index = (
                faiss.IndexHNSWFlat(d, m, ip)
                if qtype is None
                else faiss.IndexHNSWSQ(d, qtype, m, ip)
            )
            index.hnsw.efConstruction = ef_c
            index.train(vectors)
            index.add(vectors)
            sweep = [
                (f"efSearch={ef}", lambda sel=None, ef=ef: faiss.SearchParametersHNSW(
                    efSearch=ef, sel=sel))
                for ef in args.ef
            ]  # fmt: skip
            yield name, f"M={m} efC={ef_c}", index, time.perf_counter() - start, sweep
    ivf_kinds = [f for f in ("ivfflat", "ivfsq8", "ivfpq") if f in families]
    if not ivf_kinds:
        return
    # One coarse quantizer per size, trained once and shared: the IVF variants differ only in how
    # they store the vectors in the lists. 4*sqrt(N) lists, 39 training points per list (the least
    # faiss accepts without a warning) to keep the 1M training within reach of 2 cores.
    nlist = round(4 * np.sqrt(n))
    rng = np.random.default_rng(args.seed)
    sample = vectors[np.sort(rng.choice(n, min(n, 39 * nlist), replace=False))]
    all_cores()
    start = time.perf_counter()
    trainer = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, ip)
    trainer.cp.niter = 10
    trainer.train(sample)
    train_s = time.perf_counter() - start
    centroids = trainer.quantizer.reconstruct_n(0, nlist)
    for kind in ivf_kinds:
        all_cores()
        start = time.perf_counter()
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(centroids)
        if kind == "ivfflat":
            index, label = faiss.IndexIVFFlat(quantizer, d, nlist, ip), "IVFFlat"
        elif kind == "ivfsq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, ip
            )
            label = "IVFSQ8"
        else:
            index, label = faiss.IndexIVFPQ(quantizer, d, nlist, 48, 8, ip), "IVFPQ48"
        # Trains the SQ ranges / PQ codebooks only: a trained quantizer holding nlist centroids
        # is kept as it is.
        index.train(sample)
        index.add(vectors)
        sweep = [
            (f"nprobe={p}", lambda sel=None, p=p: faiss.SearchParametersIVF(nprobe=p, sel=sel))
            for p in args.nprobe
        ]
        build_s = train_s + time.perf_counter() - start
        yield label, f"nlist={nlist}", index, build_s, sweep


def open_rows(path: Path, qpath: Path) -> dict[str, Any]:
    faiss = faiss_module()
    out: dict[str, Any] = {}
    modes = (("read", 0), ("mmap", faiss.IO_FLAG_MMAP), ("mmap_ifc", faiss.IO_FLAG_MMAP_IFC))
    for mode, flag in modes:
        proc = subprocess.run(
            [sys.executable, "-c", _OPEN_WORKER, str(path), str(flag), str(qpath)],
            capture_output=True,
            text=True,
        )
        lines = proc.stdout.strip().splitlines()
        out[mode] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
            "error": proc.stderr.strip().splitlines()[-1:] }  # fmt: skip
    return out


def measure_size(n: int, base: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict:
    faiss = faiss_module()
    vectors = grown(base, n, args.seed, args.copy_noise)
    copies = (n + len(base) - 1) // len(base)
    cosine = 1 / np.sqrt(1 + args.copy_noise**2)
    made = f" and {copies - 1} noisy copies of them (noise {args.copy_noise}, cosine {cosine:.2f})"
    print(
        f"\n== {n:,} vectors: {len(base):,} real embeddings{made if copies > 1 else ''}; "
        f"{len(queries)} queries; load average {load_average()}",
        flush=True,
    )
    truth = exact_top_k(vectors, queries, K)
    fq = queries[: args.filter_queries]
    allowed = {f: filter_ids(n, f, args.seed) for f in FRACTIONS}
    selectors = {f: bitmap_selector(ids) for f, ids in allowed.items()}
    ftruth = {f: exact_top_k(vectors, fq, K, ids) for f, ids in allowed.items()}
    # The fallback for selective filters: exact search over the allowed ids' stored vectors.
    fallback: dict[str, Any] = {}
    faiss.omp_set_num_threads(1)
    for f, ids in allowed.items():
        if f <= FALLBACK_MAX:

            def exact_subset(q: np.ndarray, ids: np.ndarray = ids) -> np.ndarray:
                # faiss.knn on one query scans without BLAS, on the one OpenMP thread set above;
                # numpy's product would start a BLAS thread team (measured: 20 ms, not 0.1 ms).
                _, top = faiss.knn(q[None], vectors[ids], K, metric=faiss.METRIC_INNER_PRODUCT)
                return ids[top[0][top[0] >= 0]]

            r = timed(exact_subset, fq)
            fallback[str(f)] = {"recall_at_10": recall_at_k(r.pop("ids"), ftruth[f]), **r}
    qpath = args.workdir / "open-queries.npy"
    np.save(qpath, queries[:100])
    rows, opens = [], []
    for name, build, index, build_s, sweep in builds(n, vectors, args):
        faiss.omp_set_num_threads(1)
        path = args.workdir / f"{name}-{build.replace(' ', '_')}-{n}.faiss"
        faiss.write_index(index, str(path))
        disk_mb = path.stat().st_size / MB
        for label, params_for in sweep:
            search = faiss_search(index, lambda sel, pf=params_for: pf(sel=sel))
            r = timed(search, queries)
            row = {
                "chunks": n, "index": name, "build": build, "build_seconds": build_s,
                "disk_mb": disk_mb, "search": label, "p50_ms": r["p50_ms"],
                "p95_ms": r["p95_ms"], "recall_at_10": recall_at_k(r["ids"], truth),
                "filtered": {},
            }  # fmt: skip
            for f, sel in selectors.items():
                fr = timed(lambda q, sel=sel, search=search: search(q, sel), fq)
                row["filtered"][str(f)] = {
                    "recall_at_10": recall_at_k(fr.pop("ids"), ftruth[f]),
                    **fr,
                }
            rows.append(row)
            print(fmt_row(row), flush=True)
        del index
        opened = open_rows(path, qpath)
        opens.append({"chunks": n, "index": name, "build": build, "disk_mb": disk_mb, **opened})
        print(fmt_open(opens[-1]), flush=True)
        if not args.keep:
            path.unlink()
    return {
        "chunks": n, "real_vectors": len(base), "copies": copies, "copy_noise": args.copy_noise, "load_average_end": load_average(),
        "search": rows, "open": opens, "filter_fallback_exact_subset": fallback,
    }  # fmt: skip


def fmt_row(r: dict[str, Any]) -> str:
    filt = "  ".join(
        f"{float(f) * 100:>3.0f}%: {v['recall_at_10']:.3f} {v['p50_ms']:6.2f}/{v['p95_ms']:6.2f}"
        for f, v in r["filtered"].items()
    )
    return (
        f"{r['index']:<8} {r['build']:<14} {r['build_seconds']:7.1f} s {r['disk_mb']:7.0f} MB "
        f"{r['search']:<12} {r['p50_ms']:6.2f}/{r['p95_ms']:6.2f} ms  R@10 {r['recall_at_10']:.3f}"
        f" | {filt}"
    )


def fmt_open(o: dict[str, Any]) -> str:
    def one(v: dict[str, Any]) -> str:
        if "error" in v:
            return f"error {v['error']}"
        return (
            f"{v['open_seconds']:6.3f} s, RSS (anon) {v['rss_open_mb']:5.0f} ({v['anon_open_mb']:5.0f})"
            f" MB, after 100 queries {v['rss_after_queries_mb']:5.0f} "
            f"({v['anon_after_queries_mb']:5.0f}) MB"
        )

    modes = " | ".join(f"{m}: {one(o[m])}" for m in ("read", "mmap", "mmap_ifc"))
    return f"  open {o['index']} {o['build']}: {modes}"


def pairs(text: str) -> tuple[int, int]:
    m, ef = text.split(":")
    return int(m), int(ef)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=Path("ann-work"))
    p.add_argument("--embed", type=int, default=50_000, help="SciFact sentences to embed (max)")
    p.add_argument("--families", nargs="+", default=["flat", "hnsw", "hnswsq", "ivfflat",
                   "ivfsq8", "ivfpq"])  # fmt: skip
    p.add_argument("--hnsw", type=pairs, nargs="+", default=[(16, 40), (16, 100), (32, 40),
                   (32, 100)], help="M:efConstruction pairs")  # fmt: skip
    p.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument(
        "--copy-noise",
        type=float,
        default=COPY_NOISE,
        help="norm of the random vector added to each copy beyond the real embeddings",
    )
    p.add_argument("--filter-queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the written index files")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)", flush=True)
    base = base_vectors(args.data, args.workdir, args.embed)
    queries = query_vectors(args.data, args.workdir)
    results = []
    for n in args.sizes:
        results.append(measure_size(n, base, queries, args))
        for f, v in results[-1]["filter_fallback_exact_subset"].items():
            print(
                f"  filter fallback, exact over the allowed ids ({float(f) * 100:.0f}%): "
                f"R@10 {v['recall_at_10']:.3f}, {v['p50_ms']:.2f}/{v['p95_ms']:.2f} ms"
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
