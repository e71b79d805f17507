"""Ingest and retrieval, side by side: this toolkit vs the standard LangChain tutorial pipeline.

    python benchmarks/ingest_vs_langchain.py [--corpus DIR] [--repeat N] [--rounds R] [--json OUT]

Both sides ingest the same files (.pdf, .txt, .md under the corpus folder, recursively) with the
same embedding model (the packaged all-MiniLM-L6-v2, loaded from the same local directory), then
answer the same retrieval questions:

* ours: ``ingest.ingest`` (token-aware chunks, FAISS + SQLite index) and ``RAG.retrieve``;
* langchain: PyPDFLoader / TextLoader -> RecursiveCharacterTextSplitter(1000, 200) ->
  FAISS.from_documents(HuggingFaceEmbeddings) -> save_local, and ``similarity_search_with_score``.

Each run of each side is a fresh subprocess, so peak memory (``ru_maxrss``) is that side's own and
neither side inherits the other's warm caches. Imports, model loading and one warm-up embedding
happen before the clock starts, on both sides. See benchmarks/README.md for what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = (REPO_ROOT / ".." / "shared" / "data" / "documents").resolve()
SUFFIXES = frozenset({".pdf", ".txt", ".md"})
SIDES = ("ours", "langchain")
TOP_K = 4
LC_CHUNK_SIZE = 1000
LC_CHUNK_OVERLAP = 200

# (question, a substring of the file name that should be among the top-k sources)
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What does the Transformer rely on instead of recurrence and convolutions?", "attention"),
    ("How many attention heads does the base Transformer model use?", "attention"),
    ("What BLEU score did the Transformer get on WMT 2014 English-to-German?", "attention"),
    ("Why are the dot products in attention scaled by the square root of d_k?", "attention"),
    ("Which sine and cosine functions are used for the positional encodings?", "attention"),
    ("Which optimizer and learning rate schedule trained the Transformer?", "attention"),
    ("What parameter sizes of Llama 2 were released?", "llama2_paper"),
    ("What use cases is Llama 2-Chat optimized for?", "llama2_paper"),
    ("How much larger was the Llama 2 pretraining corpus than Llama 1's?", "llama2_paper"),
    ("How do I build llama.cpp from source?", "llamacpp"),
    ("Which GPU backends does llama.cpp support, such as CUDA, Metal or Vulkan?", "llamacpp"),
    ("How do I quantize a model to a smaller size with llama.cpp?", "llamacpp"),
    ("How do I compile and run run.c in llama2.c?", "llama2c"),
    ("Which models trained on TinyStories can llama2.c run?", "llama2c"),
    ("How can I export Meta's Llama 2 weights for llama2.c?", "llama2c"),
    ("What did Paul Graham work on before college?", "paul_graham"),
    ("What was Viaweb and who bought it?", "paul_graham"),
    ("How did Y Combinator get started?", "paul_graham"),
    ("What did the President say about Judge Ketanji Brown Jackson?", "state_of_the_union"),
    ("What sanctions were imposed on Russia for invading Ukraine?", "state_of_the_union"),
    ("How will the plan lower the cost of prescription drugs?", "state_of_the_union"),
)
# Not timed: they let both sides reach a steady state (lazy imports, allocator, first FAISS call).
WARMUP_QUESTIONS: tuple[str, ...] = (
    "What is this document about?",
    "Who are the authors?",
    "What results are reported?",
)

CHARS_NOTE = (
    "sum of len(page_content) over the Documents that LangChain's PyPDFLoader (one per PDF page, "
    "pypdf plain extraction) and TextLoader (one per file, UTF-8) return for these files; counted "
    "once, untimed, and used as the numerator of chars/s for both sides"
)


# --------------------------------------------------------------------------- shared helpers
def discover_files(corpus: Path) -> list[Path]:
    """Files both sides ingest: .pdf, .txt and .md under ``corpus``, sorted, hidden ones skipped."""
    files = []
    for path in sorted(corpus.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(corpus).parts)
        if not hidden and path.is_file() and path.suffix.lower() in SUFFIXES:
            files.append(path.resolve())
    return files


def load_with_langchain(files: Sequence[Path]) -> tuple[list[Any], list[str]]:
    """The tutorial loaders; a file that fails to load is skipped (and named), as ours does."""
    from langchain_community.document_loaders import PyPDFLoader, TextLoader

    docs: list[Any] = []
    skipped: list[str] = []
    for path in files:
        loader = (
            PyPDFLoader(str(path))
            if path.suffix.lower() == ".pdf"
            else TextLoader(str(path), encoding="utf-8")
        )
        try:
            docs.extend(loader.load())
        except Exception as exc:  # the tutorial pattern: skip what cannot be loaded
            skipped.append(f"{path}: {type(exc).__name__}: {exc}")
    return docs, skipped


def rss_now_mb() -> float:
    """Resident set size right now (VmRSS), in MB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def time_queries(
    search: Callable[[str], list[str]], rounds: int
) -> tuple[list[float], dict[str, list[str]]]:
    """Latencies (ms) of every question over ``rounds`` passes, and the sources each one got."""
    for question in WARMUP_QUESTIONS:
        search(question)
    latencies: list[float] = []
    sources: dict[str, list[str]] = {}
    for _ in range(rounds):
        for question, _expected in QUESTIONS:
            started = time.perf_counter()
            got = search(question)
            latencies.append((time.perf_counter() - started) * 1000)
            sources[question] = got
    return latencies, sources


def retrieval_summary(latencies: list[float], sources: dict[str, list[str]]) -> dict[str, Any]:
    hits = sum(
        any(expected in Path(s).name for s in sources[question]) for question, expected in QUESTIONS
    )
    return {
        "retrieval_queries": len(latencies),
        "retrieval_p50_ms": percentile(latencies, 50),
        "retrieval_p95_ms": percentile(latencies, 95),
        "retrieval_mean_ms": statistics.fmean(latencies),
        "hits_at_k": hits,
        "questions": len(QUESTIONS),
    }


# --------------------------------------------------------------------------- the two workers
def run_ours(files: list[Path], workdir: Path, rounds: int) -> dict[str, Any]:
    import faiss  # noqa: F401  (imported before the clock, as on the other side)
    import pypdf  # noqa: F401

    from ingest import ingest
    from rag import RAG
    from rag.config import Settings
    from rag.index.reader import Store
    from rag.llm.tokens import load_tokenizer
    from rag.retrieval.embeddings import Embedder

    settings = Settings.model_validate({})
    embedder = Embedder()
    _ = embedder.model  # load now, not inside the timed section
    tokenizer = load_tokenizer(settings)
    embedder.embed(["warm-up"])
    tokenizer.count_many(["warm-up"])
    baseline_now, baseline_peak = rss_now_mb(), rss_peak_mb()

    index_dir = workdir / "index"
    started = time.perf_counter()
    report = ingest(files, index_dir, settings, embedder=embedder, tokenizer=tokenizer)
    seconds = time.perf_counter() - started
    peak_after_ingest = rss_peak_mb()

    with Store.open(index_dir) as store:
        live = sorted(
            int(i)
            for seg in store.segments
            for i in (seg.ids if seg.live is None else seg.ids[seg.live])
        )
        distinct = len({c.text for c in store.chunks(live)})

    rag = RAG.open(index_dir, settings, embedder=embedder)
    try:
        latencies, sources = time_queries(
            lambda q: [c.source for c in rag.retrieve(q, k=TOP_K)], rounds
        )
    finally:
        rag.close()
    return {
        "side": "ours",
        "ingest_seconds": seconds,
        "chars_own_count": report.chars,
        "chunks": report.chunks_added,
        "distinct_chunk_texts": int(distinct),
        "files_with_text": report.files_ingested,
        "files_skipped": [f"{s.path}: {s.reason}" for s in report.files_skipped],
        "chunking": f"{settings.chunk_tokens} tokens, overlap {settings.chunk_overlap}",
        "rss_after_load_mb": baseline_now,
        "peak_rss_after_load_mb": baseline_peak,
        "peak_rss_after_ingest_mb": peak_after_ingest,
        "peak_rss_mb": rss_peak_mb(),
        **retrieval_summary(latencies, sources),
    }


def run_langchain(files: list[Path], workdir: Path, rounds: int) -> dict[str, Any]:
    import faiss  # noqa: F401  (imported before the clock, as on the other side)
    import pypdf  # noqa: F401
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.retrieval.embeddings import resolve_embedder

    model_path = resolve_embedder("all-MiniLM-L6-v2")
    embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})
    embeddings.embed_documents(["warm-up"])
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=LC_CHUNK_SIZE, chunk_overlap=LC_CHUNK_OVERLAP
    )
    baseline_now, baseline_peak = rss_now_mb(), rss_peak_mb()

    index_dir = workdir / "faiss_index"
    started = time.perf_counter()
    docs, skipped = load_with_langchain(files)
    splits = splitter.split_documents(docs)
    store = FAISS.from_documents(splits, embeddings)
    store.save_local(str(index_dir))
    seconds = time.perf_counter() - started
    peak_after_ingest = rss_peak_mb()

    chars = sum(len(d.page_content) for d in docs)
    with_text = len({d.metadata["source"] for d in docs if d.page_content.strip()})
    distinct = len({d.page_content for d in splits})
    n_chunks = len(splits)
    del store, docs, splits

    # Read back from disk, as ours does with RAG.open; the pickle is our own, written just now.
    loaded = FAISS.load_local(str(index_dir), embeddings, allow_dangerous_deserialization=True)
    latencies, sources = time_queries(
        lambda q: [
            d.metadata["source"] for d, _ in loaded.similarity_search_with_score(q, k=TOP_K)
        ],
        rounds,
    )
    return {
        "side": "langchain",
        "ingest_seconds": seconds,
        "chars_own_count": chars,
        "chunks": n_chunks,
        "distinct_chunk_texts": distinct,
        "files_with_text": with_text,
        "files_skipped": skipped,
        "chunking": f"{LC_CHUNK_SIZE} chars, overlap {LC_CHUNK_OVERLAP}",
        "rss_after_load_mb": baseline_now,
        "peak_rss_after_load_mb": baseline_peak,
        "peak_rss_after_ingest_mb": peak_after_ingest,
        "peak_rss_mb": rss_peak_mb(),
        **retrieval_summary(latencies, sources),
    }


WORKERS: dict[str, Callable[[list[Path], Path, int], dict[str, Any]]] = {
    "ours": run_ours,
    "langchain": run_langchain,
}


def worker_main(side: str, corpus: Path, rounds: int, out: Path) -> None:
    files = discover_files(corpus)
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        result = WORKERS[side](files, Path(tmp), rounds)
    out.write_text(json.dumps(result), encoding="utf-8")


# --------------------------------------------------------------------------- the driver
def run_side(side: str, corpus: Path, rounds: int, verbose: bool) -> dict[str, Any]:
    """One run of one side in a fresh Python process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory(prefix="bench-result-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            side,
            "--corpus",
            str(corpus),
            "--rounds",
            str(rounds),
            "--worker-out",
            str(out),
        ]
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, text=True, capture_output=not verbose, check=False
        )
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or "")[-4000:]
            raise SystemExit(f"The {side} run failed (exit {proc.returncode}).\n{tail}")
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def run_order(repeat: int) -> list[str]:
    """ours, langchain, langchain, ours, ...: each side goes first in every other pair."""
    order: list[str] = []
    for i in range(repeat):
        order.extend(SIDES if i % 2 == 0 else SIDES[::-1])
    return order


def summarise(runs: list[dict[str, Any]], chars: int) -> dict[str, Any]:
    """Medians over the runs of one side; chars/s uses the one shared character count."""
    for run in runs:
        run["chars_per_s"] = chars / run["ingest_seconds"]
        run["chunks_per_s"] = run["chunks"] / run["ingest_seconds"]
        run["peak_increase_mb"] = run["peak_rss_mb"] - run["rss_after_load_mb"]
    summary: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            summary[key] = statistics.median(run[key] for run in runs)
        else:
            summary[key] = value
    return summary


# (label, key, format, ratio direction: "higher" or "lower" is better, or None for no ratio)
ROWS: tuple[tuple[str, str, str, str | None], ...] = (
    ("ingest time (s)", "ingest_seconds", "{:.2f}", "lower"),
    ("source chars/s", "chars_per_s", "{:,.0f}", "higher"),
    ("chunks produced", "chunks", "{:,.0f}", None),
    ("distinct chunk texts", "distinct_chunk_texts", "{:,.0f}", None),
    ("chunks/s", "chunks_per_s", "{:,.1f}", "higher"),
    ("RSS after model load (MB)", "rss_after_load_mb", "{:,.0f}", "lower"),
    ("peak RSS (MB)", "peak_rss_mb", "{:,.0f}", "lower"),
    ("peak RSS - after load (MB)", "peak_increase_mb", "{:,.0f}", "lower"),
    ("retrieval p50 (ms)", "retrieval_p50_ms", "{:.2f}", "lower"),
    ("retrieval p95 (ms)", "retrieval_p95_ms", "{:.2f}", "lower"),
    ("expected file in top-4", "hits_at_k", "{:.0f}", None),
)


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """ours / langchain for every compared metric (see ROWS for which direction is better)."""
    out = {}
    for _label, key, _fmt, better in ROWS:
        if better is not None and theirs[key]:
            out[key] = ours[key] / theirs[key]
    return out


def render(result: dict[str, Any]) -> str:
    ours, theirs, rat = result["ours"], result["langchain"], result["ratios"]
    lines = [
        f"Corpus: {result['corpus']} ({result['files']} files: .pdf, .txt, .md)",
        f"Source characters: {result['source_chars']:,} ({CHARS_NOTE}).",
        f"Own counts: ours {ours['chars_own_count']:,}, langchain {theirs['chars_own_count']:,}.",
        f"Chunking: ours {ours['chunking']}; langchain {theirs['chunking']}.",
        f"Runs: {result['repeat']} per side, alternating, each in a fresh process; medians shown. "
        f"Retrieval: {ours['retrieval_queries']:.0f} timed queries per run, k={TOP_K}.",
        "",
        f"{'metric':<28}{'ours':>12}{'langchain':>12}{'ours/langchain':>16}",
        "-" * 68,
    ]
    for label, key, fmt, better in ROWS:
        ratio = f"{rat[key]:.2f} ({better} better)" if key in rat else ""
        if key == "hits_at_k":
            lines.append(
                f"{label:<28}{fmt.format(ours[key]) + '/' + str(len(QUESTIONS)):>12}"
                f"{fmt.format(theirs[key]) + '/' + str(len(QUESTIONS)):>12}"
            )
            continue
        lines.append(
            f"{label:<28}{fmt.format(ours[key]):>12}{fmt.format(theirs[key]):>12}  {ratio}"
        )
    for side in SIDES:
        skipped = result[side]["files_skipped"]
        if skipped:
            lines.append(f"\nSkipped by {side}: " + "; ".join(skipped))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder to ingest")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (medians reported)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed passes over the questions per run"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--verbose", action="store_true", help="show the workers' output")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    corpus = args.corpus.resolve()
    if args.worker:
        worker_main(args.worker, corpus, args.rounds, args.worker_out)
        return
    files = discover_files(corpus)
    if not files:
        raise SystemExit(f"No .pdf, .txt or .md files under {corpus}")
    # Counted once, before any run; this also puts the files in the OS page cache for both sides.
    docs, _skipped = load_with_langchain(files)
    source_chars = sum(len(d.page_content) for d in docs)
    del docs

    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for i, side in enumerate(run_order(args.repeat), start=1):
        print(f"[{i}/{2 * args.repeat}] {side} ...", file=sys.stderr, flush=True)
        runs[side].append(run_side(side, corpus, args.rounds, args.verbose))
    ours = summarise(runs["ours"], source_chars)
    theirs = summarise(runs["langchain"], source_chars)
    result = {
        "corpus": str(corpus),
        "files": len(files),
        "source_chars": source_chars,
        "source_chars_counted_as": CHARS_NOTE,
        "repeat": args.repeat,
        "rounds": args.rounds,
        "ours": ours,
        "langchain": theirs,
        "ratios": ratios(ours, theirs),
        "runs": runs,
    }
    print(render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nWrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
