"""Index scale, side by side: our index directory vs LangChain's FAISS vector store.

    python benchmarks/scale.py [--sizes 10k 100k 1M] [--max-chunks N] [--json OUT]

For each size, both sides index the same chunks with the same vectors:

* chunks: sentences of the BEIR SciFact abstracts (title and abstract text split at sentence ends,
  fragments under 20 characters dropped, duplicates removed), grouped into documents of 5-20
  chunks; when a size needs more chunks than the corpus holds, the sentences are used again with a
  distinguishing suffix (`` [copy 2]``, ...), and the output says so;
* vectors: seeded random unit vectors (384 dimensions, float32). Embedding time is not what this
  measures, so no model runs on either side;
* queries: the SciFact queries, each with a seeded query vector: the stored vector of a random
  chunk plus noise (cosine about 0.89 to it).

Ours builds through the public writer (``open_writer`` / ``StoreWriter.add_document``), LangChain
through ``FAISS.from_embeddings`` / ``add_embeddings`` and ``save_local``. Then, each in a fresh
process: adding one 5-chunk document and persisting it (ours: ``open_writer`` + ``add_document``
+ ``commit``; LangChain: ``load_local`` + ``add_embeddings`` + ``save_local``); and querying (open
time, retrieval p50/p95, peak RSS of that process). Disk is measured after the add. Recall@10 of
each side's dense results is computed against exact search (numpy, over every stored vector) on a
sample of the queries. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scale_corpus import (
    added_document,
    chunk_text,
    exact_top_k,
    load_queries,
    load_sentences,
    query_vectors,
    write_vectors,
)
from scale_steps import WORKERS, K

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "scifact" / "derived_beir_style").resolve()
KEYS = (
    "side", "chunks", "add_one_seconds", "open_seconds", "dense_p50_ms", "dense_p95_ms",
    "lexical_p50_ms", "lexical_p95_ms", "hybrid_p50_ms", "hybrid_p95_ms", "recall_at_10",
    "peak_rss_mb", "disk_mb",
)  # fmt: skip


def run_worker(name: str, task: dict[str, Any], workdir: Path, verbose: bool) -> dict[str, Any]:
    """Run one step in a fresh process, so that its peak RSS and caches are its own."""
    task_file = workdir / f"{name}.task.json"
    task_file.write_text(json.dumps(task), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "--worker", name, "--task", str(task_file)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=not verbose, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {name} failed ({proc.returncode}):\n{proc.stderr or ''}")
    result: dict[str, Any] = json.loads(task_file.with_suffix(".out").read_text("utf-8"))
    return result


def disk_mb(path: Path) -> float:
    """Allocated size of a directory, as du counts it, in MB (2^20 bytes)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) / 2**20


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(
        np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])
    )


def run_size(
    n: int, args: argparse.Namespace, pool: list[str], workdir: Path
) -> list[dict[str, Any]]:
    queries = load_queries(args.data, args.queries)
    vectors = np.load(workdir / "vectors.npy", mmap_mode="r")
    added_texts, added = added_document(pool, args.seed)
    np.save(workdir / "added.npy", added)
    qvecs = query_vectors(vectors, n, len(queries), args.seed)
    np.save(workdir / f"queries-{n}.npy", qvecs)
    sample = min(args.recall_queries, len(queries))
    rows = exact_top_k(vectors, n, added, qvecs[:sample], K)
    exact = [[chunk_text(pool, r) if r < n else added_texts[r - n] for r in q] for q in rows]
    if n > len(pool):
        print(
            f"  {n:,} chunks from {len(pool):,} distinct SciFact sentences: the corpus is used "
            f"{-(-n // len(pool))} times, copies carrying the suffix ' [copy i]'",
            file=sys.stderr,
        )
    out = []
    for side in ("ours", "langchain"):
        index = workdir / f"{side}-{n}"
        task = {
            "data": str(args.data),
            "chunks": n,
            "seed": args.seed,
            "index": str(index),
            "vectors": str(workdir / "vectors.npy"),
            "added": str(workdir / "added.npy"),
            "added_texts": added_texts,
            "queries": queries,
            "recall_queries": sample,
            "query_vectors": str(workdir / f"queries-{n}.npy"),
        }
        print(f"  {side}: building {n:,} chunks ...", file=sys.stderr, flush=True)
        built = run_worker(f"build-{side}", task, workdir, args.verbose)
        row: dict[str, Any] = dict.fromkeys(KEYS)
        row.update(side=side, chunks=n, **run_worker(f"add-{side}", task, workdir, args.verbose))
        row["disk_mb"] = disk_mb(index)
        print(f"  {side}: built in {built['build_seconds']:.1f} s; querying ...", file=sys.stderr)
        got = run_worker(f"query-{side}", task, workdir, args.verbose)
        row["recall_at_10"] = recall(got.pop("dense_texts"), exact)
        row.update(got)
        out.append(row)
        if not args.keep:
            shutil.rmtree(index)
    return out


def render(rows: list[dict[str, Any]], nq: int, recall_n: int, distinct: int) -> str:
    lines = []
    fmt = {"add_one_seconds": "{:.3f}", "open_seconds": "{:.3f}", "recall_at_10": "{:.3f}"}
    for n in sorted({r["chunks"] for r in rows}):
        ours, lc = (
            next(r for r in rows if r["chunks"] == n and r["side"] == s)
            for s in ("ours", "langchain")
        )
        lines += [
            f"\n{n:,} chunks ({nq} queries, k={K}; recall@10 on {recall_n} of them)"
            + (
                f"; SciFact's {distinct:,} sentences used {-(-n // distinct)} times"
                if n > distinct
                else ""
            ),
            f"{'metric':<18}{'ours':>12}{'langchain':>12}{'ours/langchain':>16}",
        ]
        for key in KEYS[2:]:
            a, b = ours[key], lc[key]
            cell = [("-" if v is None else fmt.get(key, "{:.1f}").format(v)) for v in (a, b)]
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            lines.append(f"{key:<18}{cell[0]:>12}{cell[1]:>12}{ratio:>16}")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[10_000, 100_000, 1_000_000],
        help="index sizes in chunks (10k, 100k, 1M accepted)",
    )
    p.add_argument("--max-chunks", type=parse_size, help="cap every size at this many chunks (CI)")
    p.add_argument("--json", type=Path, help="write the rows (one per side and size) to this file")
    p.add_argument(
        "--queries", type=int, help="use only the first N SciFact queries (default: all)"
    )
    p.add_argument("--recall-queries", type=int, default=100, help="queries checked for recall@10")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact directory")
    p.add_argument("--workdir", type=Path, help="where to build (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the indexes after measuring")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="show the workers' own output")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        task = json.loads(args.task.read_text("utf-8"))
        args.task.with_suffix(".out").write_text(json.dumps(WORKERS[args.worker](task)), "utf-8")
        return
    sizes = sorted({min(s, args.max_chunks or s) for s in args.sizes})
    pool = load_sentences(args.data)
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.workdir:  # kept, with the indexes if --keep
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-scale-")))
        write_vectors(workdir / "vectors.npy", max(sizes), args.seed)
        rows = []
        for n in sizes:
            print(f"{n:,} chunks:", file=sys.stderr, flush=True)
            rows += run_size(n, args, pool, workdir)
            if args.json:  # after every size, so that a long run keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    nq = len(load_queries(args.data, args.queries))
    print(render(rows, nq, min(args.recall_queries, nq), len(pool)))
    print(
        f"\n{os.cpu_count()} CPUs; load average {load[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. Times: ours / langchain below 1 is better."
    )


if __name__ == "__main__":
    main()
