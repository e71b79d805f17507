"""Ingest throughput on one corpus: ours on 1 and N workers and on Ray, LangChain, the embedder alone.

    python benchmarks/ingest_scale.py [--corpus DIR] [--workers N] [--rows 1,2,4,5]
                                      [--repeat R] [--json OUT]

Five rows, each run in a fresh subprocess (the script re-runs itself with ``--worker``):

1. ours, 1 worker: ``ingest.ingest(files, index_dir, settings, embedder=, tokenizer=, workers=1)``;
2. ours, N workers: the same with ``workers=N`` (``--workers``, default: the number of cores);
3. ours on Ray: the same with ``ray_address="auto"``, in a network namespace of its own where only
   loopback exists (``unshare --net``), after ``ray.init`` has started a local cluster there;
4. langchain: the tutorial pipeline of ``ingest_vs_langchain.py`` (PyPDFLoader / TextLoader ->
   RecursiveCharacterTextSplitter(1000, 200) -> FAISS.from_documents -> save_local);
5. embedder alone, the ceiling: ``Embedder.embed`` over the distinct chunk texts that row 2
   stored in its index, in one call with the settings' batch size.

Untimed set-up in every worker: imports, model loading, one warm-up embedding (and the tokenizer,
and Ray's cluster start, whose time is reported on its own). Timed: the ingest call (or the
embed call). chars/s divides one character count, made once by the driver as
``ingest_vs_langchain.py`` makes it, by each row's time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_scale_workers import worker_main
from ingest_vs_langchain import (  # benchmarks/ is a folder of scripts, not a package
    CHARS_NOTE,
    DEFAULT_CORPUS,
    REPO_ROOT,
    discover_files,
    load_with_langchain,
)

RAY_TARGET = 1.15  # Ray's seconds over N local workers' on one machine


@dataclass(frozen=True)
class Row:
    number: int
    key: str
    worker: str  # the --worker kind that measures it


ROWS = (
    Row(1, "ours_1", "ours"),
    Row(2, "ours_n", "ours"),
    Row(3, "ours_ray", "ray"),
    Row(4, "langchain", "langchain"),
    Row(5, "embedder", "embedder"),
)
BY_NUMBER = {r.number: r for r in ROWS}
OURS = ("ours_1", "ours_n", "ours_ray")
# The index whose chunk texts row 5 embeds: row 2's, else row 1's or Ray's (all store the same).
TEXTS_FROM = ("ours_n", "ours_1", "ours_ray")


def label(key: str, workers: int) -> str:
    return {
        "ours_1": "ours, 1 worker",
        "ours_n": f"ours, {workers} workers",
        "ours_ray": f"ours on Ray ({workers})",
        "langchain": "langchain",
        "embedder": "embedder alone",
    }[key]


# --------------------------------------------------------------------------- the driver
class RowFailed(Exception):
    pass


def ray_unavailable() -> str | None:
    """Why the Ray row cannot run here, or None when it can."""
    from ingest import ingest

    if "ray_address" not in inspect.signature(ingest).parameters:
        return "ingest() takes no ray_address in this checkout"
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return f"ray is not installed ({exc}): pip install -e '.[ray]'"
    if shutil.which("unshare") is None:
        return "no unshare command, so no network namespace of loopback only"
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"unshare --net fails here ({probe.stderr.strip() or probe.returncode}); needs root"
    return None


def run_worker(
    kind: str, args: argparse.Namespace, index_dir: Path | None, timeout: float
) -> dict[str, Any]:
    """One measurement in a fresh process (for Ray: in a network namespace of loopback only)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-result-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", kind,
            "--corpus", str(args.corpus), "--workers", str(args.workers),
            "--index-dir", str(index_dir or Path(tmp) / "unused"), "--worker-out", str(out),
            "--embed-quantize", args.embed_quantize,
        ]  # fmt: skip
        if kind == "ray":
            cmd = ["unshare", "--net", "bash", "-c", f"ip link set lo up && exec {shlex.join(cmd)}"]
        pipe = None if args.verbose else subprocess.PIPE
        # A session of its own, so that a timeout ends the worker's helpers too.
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, text=True, stdout=pipe, stderr=pipe,
            start_new_session=True,
        )  # fmt: skip
        try:
            _stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RowFailed(f"timed out after {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            tail = (stderr or "").strip().splitlines()[-1:] or ["its output is above"]
            print((stderr or "")[-4000:], file=sys.stderr)
            raise RowFailed(f"exit {proc.returncode}: {tail[0][:200]}")
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def run_order(numbers: Sequence[int], repeat: int) -> list[int]:
    """Rows in ascending order, then descending, alternating over the repeats."""
    ordered = sorted(numbers)
    out: list[int] = []
    for i in range(repeat):
        out.extend(ordered if i % 2 == 0 else ordered[::-1])
    return out


def summarise(runs: list[dict[str, Any]], chars: int) -> dict[str, Any]:
    """Medians over one row's runs; chars/s uses the one shared character count."""
    for run in runs:
        run["chars_per_s"] = chars / run["seconds"]
        run["chunks_per_s"] = run["chunks"] / run["seconds"]
    summary: dict[str, Any] = {"runs": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            summary[key] = statistics.median(run[key] for run in runs)
        else:
            summary[key] = value
    return summary


def compare(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios: ours vs langchain (chars/s), ours as a fraction of the embedder alone (its
    seconds over ours, and ours' chunks/s over its texts/s), and Ray over N workers (seconds)."""
    out: dict[str, Any] = {}
    lc, emb = rows.get("langchain"), rows.get("embedder")
    for key in OURS:
        row = rows.get(key)
        if row is None:
            continue
        got: dict[str, float] = {}
        if lc is not None:
            got["vs_langchain"] = row["chars_per_s"] / lc["chars_per_s"]
        if emb is not None:
            got["of_embedder_time"] = emb["seconds"] / row["seconds"]
            got["of_embedder_rate"] = row["chunks_per_s"] / emb["chunks_per_s"]
        out[key] = got
    if "ours_ray" in rows and "ours_n" in rows:
        ratio = rows["ours_ray"]["seconds"] / rows["ours_n"]["seconds"]
        out["ray_vs_n"] = {"seconds": ratio, "target": RAY_TARGET, "met": ratio <= RAY_TARGET}
    return out


def render(result: dict[str, Any]) -> str:
    rows, ratios, workers = result["rows"], result["ratios"], result["workers"]
    lines = [
        f"Corpus: {result['corpus']} ({result['files']:,} files: .pdf, .txt, .md)",
        f"Source characters: {result['source_chars']:,} ({CHARS_NOTE}).",
        f"Runs: {result['repeat']} per row, alternating order, each in a fresh process; medians.",
        "",
        f"{'row':<22}{'seconds':>9}{'chars/s':>10}{'chunks':>8}{'chunks/s':>10}"
        f"{'peak RSS':>10}{'helpers':>9}{'vs LC':>7}{'% emb':>7}{'% emb/s':>9}",
        f"{'':<22}{'':>9}{'':>10}{'':>8}{'':>10}{'MB':>10}{'MB':>9}"
        f"{'chars':>7}{'time':>7}{'chunks':>9}",
        "-" * 101,
    ]
    for key in result["selected"]:
        name = label(key, workers)
        if key in result["not_run"]:
            lines.append(f"{name:<22}{result['not_run'][key]}")
            continue
        row, rat = rows[key], ratios.get(key, {})

        def pct(k: str, r: dict[str, float] = rat) -> str:
            return f"{100 * r[k]:.0f}%" if k in r else "-"

        vs_lc = f"{rat['vs_langchain']:.2f}" if "vs_langchain" in rat else "-"
        lines.append(
            f"{name:<22}{row['seconds']:>9.2f}{row['chars_per_s']:>10,.0f}{row['chunks']:>8,.0f}"
            f"{row['chunks_per_s']:>10,.1f}{row['peak_rss_mb']:>10,.0f}"
            f"{row['helpers_peak_mb']:>9,.0f}{vs_lc:>7}{pct('of_embedder_time'):>7}"
            f"{pct('of_embedder_rate'):>9}"
        )
    lines += [
        "",
        "peak RSS: the measuring process (ru_maxrss, set-up included); helpers: its child",
        "processes (parse workers, Ray), peak summed PSS while timed. vs LC: chars/s over",
        "langchain's. % emb: embedder-alone seconds / row seconds; % emb/s: row chunks/s /",
        "embedder-alone texts/s (the same distinct texts).",
    ]
    if "ray_vs_n" in ratios:
        r = ratios["ray_vs_n"]
        verdict = "met" if r["met"] else "NOT met"
        lines.append(
            f"Ray vs {workers} workers: {r['seconds']:.2f}x the seconds "
            f"(target <= {r['target']:.2f}: {verdict})."
        )
    if "ours_ray" in rows and "ray_start_seconds" in rows["ours_ray"]:
        ray_row = rows["ours_ray"]
        lines.append(
            f"Ray cluster start (untimed): {ray_row['ray_start_seconds']:.1f} s; its processes "
            f"held {ray_row['helpers_before_mb']:,.0f} MB when the clock started."
        )
    if "embedder" in rows:
        e = rows["embedder"]
        lines.append(
            f"Embedder alone: {e['chunks']:,.0f} distinct texts of {e['stored_chunks']:,.0f} "
            f"stored chunks, batch {e['batch_size']:.0f}, {e['runtime']}, embed_quantize "
            f"{result.get('embed_quantize', 'none')}."
        )
    for key in (*OURS, "langchain"):
        if key in rows:
            r = rows[key]
            lines.append(
                f"{label(key, workers)}: {r['files_ingested']:,.0f} files with text, "
                f"own char count {r['chars_own_count']:,.0f}, "
                f"{r['distinct_chunk_texts']:,.0f} distinct chunk texts, "
                f"{len(r['files_skipped'])} skipped."
            )
    return "\n".join(lines)


def measure(args: argparse.Namespace, numbers: list[int]) -> dict[str, Any]:
    corpus = args.corpus
    files = discover_files(corpus)
    if not files:
        raise SystemExit(f"No .pdf, .txt or .md files under {corpus}")
    not_run: dict[str, str] = {}
    if 3 in numbers:
        reason = ray_unavailable()
        if reason:
            not_run["ours_ray"] = f"n/a ({reason})"
    # Counted once, before any run; this also puts the files in the OS page cache for every row.
    docs, _skipped = load_with_langchain(files)
    source_chars = sum(len(d.page_content) for d in docs)
    del docs

    runs: dict[str, list[dict[str, Any]]] = {BY_NUMBER[n].key: [] for n in numbers}
    want_texts = next((k for k in TEXTS_FROM if k in runs and k not in not_run), None)
    order = run_order(numbers, args.repeat)
    with tempfile.TemporaryDirectory(prefix="ingest-scale-") as work:
        texts_index: Path | None = None
        for i, number in enumerate(order, start=1):
            row = BY_NUMBER[number]
            if row.key in not_run:
                continue
            print(
                f"[{i}/{len(order)}] {label(row.key, args.workers)} ...",
                file=sys.stderr,
                flush=True,
            )
            index_dir = Path(work) / f"index-{i}"
            try:
                if row.key == "embedder":
                    if texts_index is None:  # no row of ours ran before it: build one, untimed
                        print("  (writing the index of chunk texts first)", file=sys.stderr)
                        run_worker("prepare", args, index_dir, args.row_timeout)
                        texts_index = index_dir
                    result = run_worker(row.worker, args, texts_index, args.row_timeout)
                else:
                    result = run_worker(row.worker, args, index_dir, args.row_timeout)
                    if row.key == want_texts and texts_index is None:
                        texts_index = index_dir
                runs[row.key].append(result)
            except RowFailed as exc:
                not_run[row.key] = f"failed ({exc})"
            finally:
                if index_dir != texts_index and index_dir.exists():
                    shutil.rmtree(index_dir)
    rows = {k: summarise(v, source_chars) for k, v in runs.items() if v and k not in not_run}
    return {
        "corpus": str(corpus),
        "files": len(files),
        "source_chars": source_chars,
        "source_chars_counted_as": CHARS_NOTE,
        "repeat": args.repeat,
        "embed_quantize": args.embed_quantize,
        "workers": args.workers,
        "selected": [BY_NUMBER[n].key for n in sorted(numbers)],
        "not_run": not_run,
        "rows": rows,
        "ratios": compare(rows),
        "runs": runs,
    }


def parse_rows(text: str) -> list[int]:
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows takes numbers 1-5, not {text!r}") from None
    if not numbers or any(n not in BY_NUMBER for n in numbers):
        raise argparse.ArgumentTypeError(f"--rows takes numbers 1-5, not {text!r}")
    return numbers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder to ingest")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="N of rows 2 and 3"
    )
    parser.add_argument(
        "--rows", type=parse_rows, default=[1, 2, 3, 4, 5], help="rows to run, e.g. 1,2,4,5"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (medians reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--row-timeout", type=float, default=3600, help="seconds before one run counts as failed"
    )
    parser.add_argument("--verbose", action="store_true", help="show the workers' output")
    parser.add_argument(
        "--worker", choices=("ours", "ray", "langchain", "embedder", "prepare"),
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--embed-quantize",
        choices=("auto", "none", "int8"),
        default="auto",
        help="our embedder in rows 1-3 and 5: the default setting (auto: int8 ONNX on a CPU), "
        "float (none) or int8",
    )
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.workers < 1:
        parser.error("--repeat and --workers must be at least 1")
    args.corpus = args.corpus.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0
    result = measure(args, args.rows)
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nWrote {args.json}", file=sys.stderr)
    failed = [k for k, v in result["not_run"].items() if v.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
