"""IVF recall@10 on SciFact: what the build's calibration says, the old way and the new, against
what real questions get; and how many results a filtered IVF search returns (issue 20, items 4
and 1).

1. Reads the chunk vectors of the SciFact index that ``rag eval --beir`` caches (built through the
   real ingest pipeline when missing: about 5-10 minutes on 2 shared cores) and embeds the 300
   SciFact test queries with the index's own embedder.
2. Builds two IVFFlat indexes over those vectors (nlist = 4 sqrt(N), SciFact being far below
   ANN_MIN_VECTORS): the old build (k-means on every row) and the module's ``write_ivf`` (rows
   held out of k-means for calibration). For nprobe 1, 2, 4, ... 64 it reports recall@10 against
   exact search as each calibration measures it and as the real questions get it:

   * ``old``: 200 stored rows asked, their own row counted, ties counted as misses (the
     calibration before issue 20);
   * ``new``: the build's held-out rows (``held_out_rows``), each left out of its own answers,
     ties at the 10th place counted as hits (``recall_at_k``): what the build and
     ``rag index verify --recall`` report now;
   * ``own_left_out_trained``: stored rows that trained the centroids, own row left out;
   * ``perturbed_0.8``: stored rows plus Gaussian noise, renormalised to cosine 0.8 with their
     row, which stays in the index and counts;
   * ``real``: the 300 test queries, on each index.

   For each way, the nprobe a build starting at 1 would choose for RECALL_TARGET, and what the
   real questions get there.
3. Filtered search (item 1): 20,000 384-d vectors of two opposite topics, a filter that allows
   14.7% of the rows, all in the topic the questions are not about; results returned of k = 10 by
   the old rule (the segment's nprobe, no fallback) and by ``SegmentVectors.search`` now.

Run from the repository root (well under a minute once the index is cached):

    python benchmarks/ivf_recall.py --json benchmarks/results/ivf_recall-scifact.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.config import Settings  # noqa: E402
from rag.eval.beir import build_index, load_beir  # noqa: E402
from rag.index.reader import Store  # noqa: E402
from rag.index.vectors import (  # noqa: E402
    IVF_FILE,
    RECALL_TARGET,
    SegmentVectors,
    exact_top,
    faiss_module,
    held_out_rows,
    ivf_nlist,
    mask_selector,
    recall_at_k,
    search_ivf,
    search_one,
    training_rows,
    write_ivf,
)
from rag.retrieval.embeddings import Embedder  # noqa: E402

DATA = (REPO / ".." / "shared" / "data").resolve()
K = 10
NPROBES = (1, 2, 4, 8, 16, 32, 64)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def chunk_vectors(index: Path) -> tuple[np.ndarray, str]:
    """The live chunk vectors of every segment, and the embedder the manifest names."""
    parts = []
    with Store.open(index) as store:
        for seg in store.segments:
            rows = np.concatenate(list(seg.vectors.all_rows()))
            parts.append(rows if seg.live is None else rows[seg.live])
        return np.concatenate(parts), store.manifest.embedder


def old_build(x: np.ndarray) -> Any:
    """The IVF index as built before issue 20: k-means on every row (SciFact is under 64 rows
    per list)."""
    faiss = faiss_module()
    n, d = x.shape
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, ivf_nlist(n), faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    return index


def old_calibration(index: Any, x: np.ndarray, nprobe: int) -> float:
    """The calibration before issue 20, as it was written: 200 stored rows asked, row numbers
    matched, the question's own row among them."""
    faiss = faiss_module()
    n = len(x)
    picked = np.sort(np.random.default_rng(1).choice(n, min(200, n), replace=False))
    _, truth = exact_top(x[picked], [x], K)
    _, found = index.search(x[picked], K, params=faiss.SearchParametersIVF(nprobe=nprobe))
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(picked) * K)


def recall(
    index: Any, x: np.ndarray, questions: np.ndarray, nprobe: int, own: np.ndarray | None = None
) -> float:
    """recall@10 as the module measures it: searched as a segment searches, ties counted."""
    truth, _ = exact_top(questions, [x], K, exclude=own)
    extra = 0 if own is None else 1
    answers = [search_ivf(index, q, K + extra, nprobe) for q in questions]
    return recall_at_k(answers, truth, exclude=own)


def chosen(sweep: dict[int, float]) -> int:
    """The nprobe a build doubling from 1 would stop at."""
    return next((p for p in NPROBES if sweep[p] >= RECALL_TARGET), NPROBES[-1])


def recall_section(x: np.ndarray, queries: np.ndarray, workdir: Path) -> dict[str, Any]:
    n = len(x)
    nlist = ivf_nlist(n)
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    old = old_build(x)
    built = write_ivf(workdir / IVF_FILE, x)
    if built is None:
        raise SystemExit("write_ivf found no cluster structure in these vectors")
    new = faiss_module().read_index(str(workdir / IVF_FILE))
    held = held_out_rows(n, nlist, 200)
    trained = np.sort(rng.choice(training_rows(n, nlist), 200, replace=False))
    cosine = 0.8  # the noise that leaves a copy at this cosine to its row, in d dimensions
    noise = np.sqrt((1 / cosine**2 - 1) / x.shape[1])
    perturbed = unit(x[trained] + noise * rng.standard_normal(x[trained].shape))
    ways: dict[str, dict[int, float]] = {w: {} for w in (
        "old", "new", "own_left_out_trained", "perturbed_0.8", "real_old_index", "real"
    )}  # fmt: skip
    for p in NPROBES:
        ways["old"][p] = old_calibration(old, x, p)
        ways["real_old_index"][p] = recall(old, x, queries, p)
        ways["new"][p] = recall(new, x, x[held], p, own=held)
        ways["own_left_out_trained"][p] = recall(new, x, x[trained], p, own=trained)
        ways["perturbed_0.8"][p] = recall(new, x, perturbed, p)
        ways["real"][p] = recall(new, x, queries, p)
        print(f"nprobe {p:>2}: " + ", ".join(f"{w} {v[p]:.3f}" for w, v in ways.items()))
    stored_best = np.sort(x[held] @ x.T, axis=1)[:, -2]  # the nearest other row
    choices = {
        "old": {"nprobe": chosen(ways["old"]), "calibrated": None, "real": None},
        "new": {"nprobe": chosen(ways["new"]), "calibrated": None, "real": None},
    }
    for way, c in choices.items():
        c["calibrated"] = round(ways[way][c["nprobe"]], 4)
        c["real"] = round(ways["real_old_index" if way == "old" else "real"][c["nprobe"]], 4)
    return {
        "chunks": n,
        "nlist": nlist,
        "held_out_rows": len(held),
        "questions": len(queries),
        "seconds": round(time.perf_counter() - t0, 1),
        "median_cosine_row_to_nearest_other_row": round(float(np.median(stored_best)), 3),
        "median_cosine_question_to_best_row": round(float(np.median((queries @ x.T).max(1))), 3),
        "recall_at_10": {w: {str(p): round(v, 4) for p, v in s.items()} for w, s in ways.items()},
        "chosen_from_nprobe_1": choices,
        "write_ivf": {
            "nprobe": built.nprobe,
            "calibrated": round(built.recall, 4),
            "real": round(recall(new, x, queries, built.nprobe), 4),
        },
    }


def filtered_section(workdir: Path, n: int = 20_000, d: int = 384) -> dict[str, Any]:
    """Two opposite topics of 40 neighbourhoods each; the filter allows 14.7% of the rows, all
    in the topic of no question."""
    rng = np.random.default_rng(11)
    pole = unit(rng.standard_normal((1, d)))[0]
    near = int(0.7 * n)
    parts = []
    for sign, count in ((1.0, near), (-1.0, n - near)):
        centres = unit(sign * pole + 0.45 * unit(rng.standard_normal((40, d))))
        parts.append(
            centres[rng.integers(0, 40, count)] + 0.3 * unit(rng.standard_normal((count, d)))
        )
    x = unit(np.concatenate(parts))
    built = write_ivf(workdir / IVF_FILE, x)
    assert built is not None
    segment = SegmentVectors(workdir, d, nprobe=built.nprobe)
    plain = faiss_module().read_index(str(workdir / IVF_FILE))
    allowed = np.zeros(n, dtype=bool)
    allowed[near : near + int(0.147 * n)] = True
    count = int(allowed.sum())
    sel = mask_selector(allowed)
    faiss = faiss_module()
    before, after, exact_hits = [], [], []
    for q in x[: near : near // 100][:100]:
        params = faiss.SearchParametersIVF(sel=sel, nprobe=built.nprobe)  # the old rule at >= 10%
        before.append(len(search_one(plain, q, K, params)))
        got = segment.search(q, K, allowed, count)
        after.append(len(got))
        best = set(np.flatnonzero(allowed)[np.argsort(-(x[allowed] @ q))[:K]].tolist())
        exact_hits.append(len(best & {p for p, _ in got}) / K)
    return {
        "rows": n,
        "allowed_share": round(count / n, 4),
        "nlist": built.nlist,
        "nprobe": built.nprobe,
        "questions": len(before),
        "returned_of_10_before": {"mean": float(np.mean(before)), "max": int(np.max(before))},
        "returned_of_10_after": {"mean": float(np.mean(after)), "min": int(np.min(after))},
        "recall_after_against_exact_filtered": float(np.mean(exact_hits)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beir", type=Path, default=DATA / "scifact" / "derived_beir_style")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    settings = Settings()
    data = load_beir(args.beir)
    t0 = time.perf_counter()
    index = build_index(data, settings)
    x, embedder_name = chunk_vectors(index)
    embedder = Embedder.from_settings(settings, embedder_name)
    queries = embedder.embed(list(data.queries.values()))
    print(f"{len(x)} chunk vectors, {len(queries)} questions ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        result = {
            "data": f"{args.beir.parent.name}/{args.beir.name}",
            "embedder": embedder_name,
            "load_average_start": os.getloadavg()[0],
            "recall": recall_section(x, queries, Path(tmp) / "a"),
            "filtered": filtered_section(Path(tmp) / "b"),
        }
    result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps({k: result[k] for k in ("filtered",)}, indent=2))
    print(json.dumps(result["recall"]["chosen_from_nprobe_1"], indent=2))
    print(json.dumps(result["recall"]["write_ivf"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
