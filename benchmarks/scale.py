"""Index scale, side by side: our index directory vs LangChain's FAISS vector store.

    python benchmarks/scale.py [--sizes 10k 100k 1M] [--max-chunks N] [--json OUT]

For each size, both sides index the same chunks with the same vectors:

* chunks: sentences of the BEIR SciFact abstracts (title and abstract text split at sentence ends,
  fragments under 20 characters dropped, duplicates removed), grouped into documents of 5-20
  chunks; when a size needs more chunks than the corpus holds, the sentences are used again with a
  distinguishing suffix (`` [copy 2]``, ...), and the output says so;
* vectors (``--vectors random``, the default): seeded random unit vectors (384 dimensions,
  float32). Embedding time is not what this measures, so no model runs on either side. Queries:
  the SciFact queries, each with the stored vector of a random chunk plus noise (cosine about
  0.89 to it) as its vector;
* vectors (``--vectors embedded``): the sentences' real embeddings (benchmarks/ann_data.py,
  cached; copies past the corpus are noisy copies of them) and the SciFact queries' real
  embeddings: approximate search has neighbours to find, where random vectors have none.

Ours builds through the public writer (``open_writer`` / ``StoreWriter.add_document``, one
``commit``: one segment), LangChain through ``FAISS.from_embeddings`` / ``add_embeddings`` and
``save_local``. Then, each in a fresh process: adding ``--adds`` 5-chunk documents one at a time,
each persisted before the next (ours: ``open_writer`` + ``add_document`` + ``commit`` with the
default merge policy; LangChain: ``load_local`` + ``add_embeddings`` + ``save_local``), reported
as the median; querying (open time, retrieval p50/p95, peak RSS of that process); and, for ours,
``optimize`` (every segment merged into one) with ``verify --recall``. Disk is measured after the
adds. Recall@10 of each side's dense results is computed against exact search (numpy, over every
stored vector) on a sample of the queries. See benchmarks/README.md.
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
    added_documents,
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
# One snapshot of the schema 1-2 format (a flat FAISS file and SQLite with FTS5), MB, as issue
# 10 measured it with this benchmark on the same chunks: half of "the two snapshots kept after a
# write". The disk target is 1.3x this after `rag index optimize`.
OLD_SNAPSHOT_MB = {10_000: 30.0, 100_000: 292.5, 1_000_000: 2_900.0}


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


def prepare_vectors(args: argparse.Namespace, workdir: Path, n: int, pool: list[str]) -> Any:
    """Write the stored vectors of the largest size to vectors.npy; in embedded mode return the
    sentences' own embeddings (the base of every copy), else None."""
    if args.vectors == "random":
        write_vectors(workdir / "vectors.npy", n, args.seed)
        return None
    import ann_data  # the real embeddings, embedded once by ann_choice.py and cached

    base = ann_data.base_vectors(args.data, args.cache or workdir, len(pool))
    np.save(workdir / "vectors.npy", ann_data.grown(base, n, args.seed))
    return base


def run_size(
    n: int, args: argparse.Namespace, pool: list[str], workdir: Path, base: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of one size (one per side, the --json keys) and their details."""
    queries = load_queries(args.data, args.queries)
    vectors = np.load(workdir / "vectors.npy", mmap_mode="r")
    adds = added_documents(pool, args.seed, args.adds, base)
    added_texts = [texts for texts, _ in adds]
    flat_texts = [t for texts in added_texts for t in texts]
    added = np.concatenate([v for _, v in adds])
    np.save(workdir / "added.npy", added)
    if base is None:
        qvecs = query_vectors(vectors, n, len(queries), args.seed)
    else:
        import ann_data

        qvecs = ann_data.query_vectors(args.data, args.cache or workdir)[: len(queries)]
    np.save(workdir / f"queries-{n}.npy", qvecs)
    sample = min(args.recall_queries, len(queries))
    rows = exact_top_k(vectors, n, added, qvecs[:sample], K)
    exact = [[chunk_text(pool, r) if r < n else flat_texts[r - n] for r in q] for q in rows]
    if n > len(pool):
        print(
            f"  {n:,} chunks from {len(pool):,} distinct SciFact sentences: the corpus is used "
            f"{-(-n // len(pool))} times, copies carrying the suffix ' [copy i]'",
            file=sys.stderr,
        )
    out, details = [], []
    for side in args.sides:
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
            "profile": str(workdir / f"add-{side}-{n}.prof") if args.profile_add else None,
        }
        print(f"  {side}: building {n:,} chunks ...", file=sys.stderr, flush=True)
        built = run_worker(f"build-{side}", task, workdir, args.verbose)
        print(
            f"  {side}: built in {built['build_seconds']:.1f} s; adding {args.adds} documents ...",
            file=sys.stderr,
            flush=True,
        )
        added_run = run_worker(f"add-{side}", task, workdir, args.verbose)
        row: dict[str, Any] = dict.fromkeys(KEYS)
        row.update(side=side, chunks=n, add_one_seconds=float(np.median(added_run["add_seconds"])))
        row["disk_mb"] = disk_mb(index)
        print(f"  {side}: querying ...", file=sys.stderr, flush=True)
        got = run_worker(f"query-{side}", task, workdir, args.verbose)
        row["recall_at_10"] = recall(got.pop("dense_texts"), exact)
        memory = got.pop("memory")
        row.update(got)
        detail = {"side": side, "chunks": n, "vectors": args.vectors, "built": built,
                  "added": added_run, "memory_after_queries": memory, "optimized": None}  # fmt: skip
        if side == "ours" and args.optimize:
            print(f"  {side}: optimizing ...", file=sys.stderr, flush=True)
            opt = run_worker(f"optimize-{side}", task, workdir, args.verbose)
            opt["disk_mb"] = disk_mb(index)
            opt["snapshot_mb"] = opt.pop("snapshot_bytes") / 2**20
            detail["optimized"] = opt
        out.append(row)
        details.append(detail)
        if not args.keep:
            shutil.rmtree(index)
    return out, details


def render(
    rows: list[dict[str, Any]],
    details: list[dict[str, Any]],
    nq: int,
    recall_n: int,
    distinct: int,
) -> str:
    lines = []
    fmt = {"add_one_seconds": "{:.3f}", "open_seconds": "{:.3f}", "recall_at_10": "{:.3f}"}
    sides = list(dict.fromkeys(r["side"] for r in rows))
    for n in sorted({r["chunks"] for r in rows}):
        by_side = {r["side"]: r for r in rows if r["chunks"] == n}
        lines += [
            f"\n{n:,} chunks ({nq} queries, k={K}; recall@10 on {recall_n} of them)"
            + (
                f"; SciFact's {distinct:,} sentences used {-(-n // distinct)} times"
                if n > distinct
                else ""
            ),
            f"{'metric':<18}"
            + "".join(f"{s:>12}" for s in sides)
            + (f"{'ours/langchain':>16}" if len(sides) == 2 else ""),
        ]
        for key in KEYS[2:]:
            values = [by_side[s][key] for s in sides]
            cells = [("-" if v is None else fmt.get(key, "{:.1f}").format(v)) for v in values]
            line = f"{key:<18}" + "".join(f"{c:>12}" for c in cells)
            if len(sides) == 2:
                a, b = values
                line += f"{a / b:>16.2f}" if a is not None and b else f"{'-':>16}"
            lines.append(line)
        for d in (d for d in details if d["chunks"] == n):
            lines += describe(d)
    return "\n".join(lines)


def describe(d: dict[str, Any]) -> list[str]:
    """The figures behind one side's row that the --json keys leave out."""
    adds = ", ".join(f"{t:.3f}" for t in d["added"]["add_seconds"])
    out = [f"{d['side']}: built in {d['built']['build_seconds']:.1f} s"]
    if "vector_indexes" in d["built"]:
        out[-1] += f" ({', '.join(describe_vectors(v) for v in d['built']['vector_indexes'])})"
    out[-1] += f"; adds {adds} s"
    if "segments" in d["added"]:
        out[-1] += f"; {d['added']['segments']} segments after them"
    mem = d.get("memory_after_queries") or {}
    if mem:
        out.append(
            f"{d['side']}: after the queries RSS {mem.get('rss_anon_mb', 0):.0f} MB private + "
            f"{mem.get('rss_file_mb', 0):.0f} MB of mapped files"
        )
    opt = d["optimized"]
    if opt is not None:
        old = OLD_SNAPSHOT_MB.get(d["chunks"])
        ratio = f" = {opt['snapshot_mb'] / old:.2f}x the old format's {old:,.0f} MB" if old else ""
        kinds = ", ".join(describe_vectors(v) for v in opt["vector_indexes"])
        out.append(
            f"{d['side']}: optimize {opt['optimize_seconds']:.1f} s -> {opt['segments']} "
            f"segment(s) ({kinds}); committed snapshot {opt['snapshot_mb']:.1f} MB{ratio}; "
            f"directory {opt['disk_mb']:.1f} MB (with the snapshot before the merge)"
        )
        for r in opt["verify_recall"]:
            out.append(
                f"{d['side']}: verify --recall {r['segment']} ({r['chunks']:,} chunks): "
                f"recall@10 {r['recall']:.3f} on stored vectors as questions"
            )
    return out


def describe_vectors(v: dict[str, Any]) -> str:
    """A segment's vector index as the manifest records it."""
    if v["kind"] != "ivf_flat":
        return str(v["kind"])
    measured = v.get("recall_at_10")  # chosen and measured when built (stored vectors)
    return f"ivf_flat nlist {v['nlist']} nprobe {v['nprobe']}" + (
        f", recall@10 {measured:.3f} when built" if measured is not None else ""
    )


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
    p.add_argument(
        "--vectors",
        choices=("random", "embedded"),
        default="random",
        help="random unit vectors, or real SciFact embeddings (cached by ann_choice.py)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        help="--vectors embedded: the folder whose embeddings/ holds the cache (ann_choice.py's "
        "--workdir; default --workdir); missing blocks are embedded (about 7 minutes)",
    )
    p.add_argument("--adds", type=int, default=5, help="5-chunk documents added, one per commit")
    p.add_argument(
        "--sides", nargs="+", choices=("ours", "langchain"), default=["ours", "langchain"]
    )
    p.add_argument(
        "--no-optimize", dest="optimize", action="store_false", help="skip ours' optimize step"
    )
    p.add_argument("--details", type=Path, help="write every figure behind the rows to this file")
    p.add_argument(
        "--profile-add", action="store_true", help="cProfile the adds into WORKDIR/add-*.prof"
    )
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
        base = prepare_vectors(args, workdir, max(sizes), pool)
        rows: list[dict[str, Any]] = []
        details: list[dict[str, Any]] = []
        for n in sizes:
            print(f"{n:,} chunks:", file=sys.stderr, flush=True)
            got, more = run_size(n, args, pool, workdir, base)
            rows, details = rows + got, details + more
            # After every size, so that a long run keeps what it measured.
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
            if args.details:
                args.details.write_text(json.dumps(details, indent=2) + "\n", encoding="utf-8")
    nq = len(load_queries(args.data, args.queries))
    print(render(rows, details, nq, min(args.recall_queries, nq), len(pool)))
    print(
        f"\n{os.cpu_count()} CPUs; load average {load[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. Times: ours / langchain below 1 is better."
    )


if __name__ == "__main__":
    main()
