"""Lexical engines side by side: today's SQLite FTS5 table, FTS5 variants, and tantivy.

    python benchmarks/lexical_engines.py [--sizes 100k 1M] [--max-chunks N] [--engines ...]
                                         [--json OUT]

Every engine indexes the same rows and answers the same questions with the same words:

* corpora: ``scifact``, the 5,183 BEIR SciFact abstracts, one chunk each (text "title\\n\\ntext",
  heading the title), where nDCG@10 against the qrels compares quality; then each ``--sizes``
  corpus of SciFact sentence chunks, cycled with a copy suffix past the corpus exactly as
  benchmarks/scale.py builds them (benchmarks/scale_corpus.py), where speed is compared;
* questions: the 300 SciFact test queries, reduced to their search words by the index's own
  ``rag.index.lexical.fts_query`` (content words, OR-ed), k=50 (the retriever's fetch_k);
* ``fts5``, the baseline: today's ``chunks_fts`` (tokenizer 'porter unicode61', columns text and
  heading, external content) queried as ``RAG`` queries it (``ORDER BY bm25(chunks_fts, 1.0, 1.0)
  LIMIT k``); the other engines are listed in benchmarks/lexical_backends.py (ENGINES).

Each index is built in a fresh process, then each engine is queried in a fresh process (open
time, p50/p95 latency, peak RSS as VmHWM). Overlap@10 is the share of the baseline's top 10
that an engine also ranks in its top 10. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lexical_backends import ENGINES, WORKERS, doc_ids, index_mb

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "scifact" / "derived_beir_style").resolve()
K = 50  # the retriever's fetch_k
BASELINE = "fts5"


def run_worker(name: str, task: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One step in a fresh process, so that its peak RSS and caches are its own."""
    task_file = workdir / f"{name}.task.json"
    task_file.write_text(json.dumps(task), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--task",
        str(task_file),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {name} failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(task_file.with_suffix(".out").read_text("utf-8"))
    return result


def load_test_queries(data: Path) -> tuple[list[str], list[dict[str, int]]]:
    """The SciFact test queries and their relevant documents (rag.eval.beir reads them)."""
    from rag.eval.beir import load_beir

    beir = load_beir(data)
    qids = list(beir.queries)
    return [beir.queries[q] for q in qids], [beir.qrels[q] for q in qids]


def overlap_at_10(found: list[list[int]], base: list[list[int]]) -> float:
    """Mean share of the baseline's top 10 that the engine's top 10 holds too."""
    shares = [
        len(set(f[:10]) & set(b[:10])) / len(b[:10]) for f, b in zip(found, base, strict=True) if b
    ]
    return sum(shares) / len(shares) if shares else 1.0


def ndcg_at_10(found: list[list[int]], qrels: list[dict[str, int]], ids: list[str]) -> float:
    from rag.eval.beir import ndcg_at

    scores = [
        ndcg_at([ids[i - 1] for i in f], rel, 10) for f, rel in zip(found, qrels, strict=True)
    ]
    return sum(scores) / len(scores)


def tantivy_missing() -> bool:
    try:
        import tantivy  # noqa: F401
    except ImportError:
        return True
    return False


def run_corpus(
    corpus: str, n: int | None, args: argparse.Namespace, engines: list[str], workdir: Path
) -> list[dict[str, Any]]:
    queries, qrels = load_test_queries(args.data)
    label = "scifact" if corpus == "scifact" else str(n)
    paths: dict[str, Path] = {}
    rows: dict[str, dict[str, Any]] = {}
    for engine in engines:
        storage = ENGINES[engine][0]
        row: dict[str, Any] = {"corpus": corpus, "chunks": n, "engine": engine}
        if storage not in paths:
            suffix = "" if storage.startswith("tantivy") else ".db"
            paths[storage] = workdir / f"{label}-{storage}{suffix}"
            print(f"  {label}: building {storage} ...", file=sys.stderr, flush=True)
            task = {"data": str(args.data), "corpus": corpus, "chunks": n, "storage": storage}
            built = run_worker("build", {**task, "path": str(paths[storage])}, workdir)
            row["build_seconds"] = built["build_seconds"]
            row["index_mb"], row["store_mb"] = index_mb(paths[storage])
        else:  # another query plan over an index already built: its build is the other's
            first = next(r for r in rows.values() if ENGINES[r["engine"]][0] == storage)
            row.update({key: first[key] for key in ("build_seconds", "index_mb", "store_mb")})
        print(f"  {label}: querying {engine} ...", file=sys.stderr, flush=True)
        task = {"engine": engine, "path": str(paths[storage]), "queries": queries, "k": K}
        got = run_worker("query", task, workdir)
        row["ranked"] = got.pop("ranked")
        row.update(got)
        rows[engine] = row
    base = rows[BASELINE]["ranked"]
    ids = doc_ids(args.data) if corpus == "scifact" else []
    for row in rows.values():
        row["overlap_at_10"] = overlap_at_10(row["ranked"], base)
        row["ndcg_at_10"] = ndcg_at_10(row["ranked"], qrels, ids) if ids else None
        del row["ranked"]
    for path in paths.values():  # the next corpus needs the disk
        if path.is_dir():
            for p in sorted(path.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            path.rmdir()
        else:
            path.unlink()
    return list(rows.values())


COLUMNS = (
    ("build_seconds", "build s", "{:.1f}"),
    ("index_mb", "index MB", "{:.0f}"),
    ("open_ms", "open ms", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("peak_rss_mb", "RSS MB", "{:.0f}"),
    ("overlap_at_10", "ovl@10", "{:.3f}"),
    ("ndcg_at_10", "nDCG@10", "{:.3f}"),
)
RATIOS = {"build_seconds": "x build", "index_mb": "x index", "p50_ms": "x p50", "p95_ms": "x p95"}
RATIOS |= {"peak_rss_mb": "x RSS"}


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for label in dict.fromkeys(r["corpus"] + ":" + str(r["chunks"]) for r in rows):
        group = [r for r in rows if r["corpus"] + ":" + str(r["chunks"]) == label]
        base = next(r for r in group if r["engine"] == BASELINE)
        corpus, n = group[0]["corpus"], group[0]["chunks"]
        title = "SciFact abstracts (5,183 chunks)" if corpus == "scifact" else f"{n:,} chunks"
        lines += ["", f"{title}, {K} results per query; ratio = engine / fts5"]
        head = f"{'engine':<20}" + "".join(f"{h:>10}" for _, h, _ in COLUMNS)
        lines.append(head + "".join(f"{h:>9}" for h in RATIOS.values()))
        for r in group:
            cells = ["-" if r.get(key) is None else fmt.format(r[key]) for key, _, fmt in COLUMNS]
            ratios = [
                f"{r[key] / base[key]:.2f}" if r.get(key) and base.get(key) else "-"
                for key in RATIOS
            ]
            lines.append(
                f"{r['engine']:<20}"
                + "".join(f"{c:>10}" for c in cells)
                + "".join(f"{c:>9}" for c in ratios)
            )
    return "\n".join(lines)


def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[100_000], help="chunks (1M ok)")
    p.add_argument("--max-chunks", type=parse_size, help="cap every size at this many chunks")
    p.add_argument(
        "--engines", nargs="+", choices=sorted(ENGINES), default=list(ENGINES), help="what to run"
    )
    p.add_argument("--no-scifact", action="store_true", help="skip the nDCG@10 corpus")
    p.add_argument("--json", type=Path, help="write the rows (one per engine and corpus) here")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact directory")
    p.add_argument("--workdir", type=Path, help="where to build (default: a temp dir, removed)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--task", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        task = json.loads(args.task.read_text("utf-8"))
        args.task.with_suffix(".out").write_text(json.dumps(WORKERS[args.worker](task)), "utf-8")
        return
    engines = [BASELINE, *(e for e in args.engines if e != BASELINE)]
    if tantivy_missing():
        print("tantivy is not installed (pip install tantivy): skipping it", file=sys.stderr)
        engines = [e for e in engines if not ENGINES[e][0].startswith("tantivy")]
    corpora: list[tuple[str, int | None]] = [] if args.no_scifact else [("scifact", None)]
    corpora += [("scale", s) for s in sorted({min(s, args.max_chunks or s) for s in args.sizes})]
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-lex-")))
        for corpus, n in corpora:
            rows += run_corpus(corpus, n, args, engines, workdir)
            if args.json:  # after every corpus, so that a long run keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(render(rows))
    print(
        f"\n{os.cpu_count()} CPUs; load average {load[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. Below 1 is better for every ratio."
    )


if __name__ == "__main__":
    main()
