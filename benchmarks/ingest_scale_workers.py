"""The worker side of benchmarks/ingest_scale.py: each row runs in a fresh process (the script re-runs
itself with ``--worker``), which calls one function here and writes its result as JSON. Also the
sampler of helper processes' memory (parse workers, Ray's processes), which ``ru_maxrss`` misses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_vs_langchain import (  # benchmarks/ is a folder of scripts, not a package
    discover_files,
    rss_now_mb,
    rss_peak_mb,
    run_langchain,
)

SAMPLE_S = 1.0  # how often the helper processes' memory is sampled


# --------------------------------------------------------------------------- memory of helpers
class HelperMemory:
    """Peak summed PSS of this process's descendants (parse workers, Ray's processes), sampled
    every ``SAMPLE_S`` seconds by a thread while the block runs. PSS shares each page among the
    processes that map it, so forked workers are not counted twice."""

    def __init__(self) -> None:
        self.before_mb = 0.0
        self.peak_mb = 0.0
        self.most_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HelperMemory:
        self.before_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _sample(self) -> float:
        pids = descendants(os.getpid())
        total = sum(pss_mb(pid) for pid in pids)
        self.peak_mb = max(self.peak_mb, total)
        self.most_processes = max(self.most_processes, len(pids))
        return total


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])  # the name may hold spaces
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size of ``pid`` in MB (0 once it has exited)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh,
    ):
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- the workers
def load_ours(quantize: str = "auto") -> tuple[Any, Any, Any]:
    """Settings, a loaded and warmed embedder, and the chunking tokenizer: the untimed set-up.
    ``quantize`` is the embedder's ``embed_quantize`` ("auto", the default: int8 on a CPU; "none":
    float; "int8")."""
    import faiss  # noqa: F401  (imported before the clock, as on the other side)
    import pypdf  # noqa: F401

    from rag.config import Settings
    from rag.llm.tokens import load_tokenizer
    from rag.retrieval.embeddings import Embedder

    settings = Settings.model_validate({"embed_quantize": quantize})
    embedder = Embedder.from_settings(settings)
    _ = embedder.model
    tokenizer = load_tokenizer(settings)
    embedder.embed(["warm-up"])
    tokenizer.count_many(["warm-up"])
    return settings, embedder, tokenizer


def stored_texts(index_dir: Path) -> list[str]:
    """The text of every live chunk of the committed index, in chunk id order."""
    from rag.index.reader import Store

    with Store.open(index_dir) as store:
        ids = sorted(int(i) for seg in store.segments for i in seg.ids)
        return [c.text for c in store.chunks(ids)]


def run_ours(
    files: list[Path], index_dir: Path, workers: int, on_ray: bool, quantize: str = "auto"
) -> dict[str, Any]:
    setup_started = time.perf_counter()
    from ingest import ingest

    settings, embedder, tokenizer = load_ours(quantize)
    extra: dict[str, Any] = {}
    # ray_address is passed only on Ray, so that rows 1-2 also run where ingest() lacks it.
    ray_kwargs: dict[str, Any] = {"ray_address": "auto"} if on_ray else {}
    if on_ray:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        extra = {"ray_start_seconds": time.perf_counter() - started, "ray_address": "auto"}
    setup_seconds = time.perf_counter() - setup_started
    rss_after_load = rss_now_mb()

    with HelperMemory() as helpers:
        started = time.perf_counter()
        report = ingest(
            files,
            index_dir,
            settings,
            embedder=embedder,
            tokenizer=tokenizer,
            workers=workers,
            **ray_kwargs,
        )
        seconds = time.perf_counter() - started
    peak = rss_peak_mb()
    if on_ray:
        import ray

        ray.shutdown()
    texts = stored_texts(index_dir)
    return {
        "seconds": seconds,
        "chunks": report.chunks_added,
        "distinct_chunk_texts": len(set(texts)),
        "chars_own_count": report.chars,
        "files_ingested": report.files_ingested,
        "files_skipped": [f"{s.path}: {s.reason}" for s in report.files_skipped],
        "setup_seconds": setup_seconds,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": peak,
        "helpers_before_mb": helpers.before_mb,
        "helpers_peak_mb": helpers.peak_mb,
        "helper_processes": helpers.most_processes,
        **extra,
    }


def run_lc(files: list[Path], workdir: Path) -> dict[str, Any]:
    # ingest_vs_langchain's worker, with one retrieval round after the timed ingest. LangChain
    # starts no processes, so helpers are sampled over the whole call and stay at 0.
    with HelperMemory() as helpers:
        got = run_langchain(files, workdir, 1)
    return {
        "seconds": got["ingest_seconds"],
        "chunks": got["chunks"],
        "distinct_chunk_texts": got["distinct_chunk_texts"],
        "chars_own_count": got["chars_own_count"],
        "files_ingested": got["files_with_text"],
        "files_skipped": got["files_skipped"],
        "rss_after_load_mb": got["rss_after_load_mb"],
        "peak_rss_mb": got["peak_rss_after_ingest_mb"],
        "helpers_before_mb": helpers.before_mb,
        "helpers_peak_mb": helpers.peak_mb,
        "helper_processes": helpers.most_processes,
    }


def run_embedder(index_dir: Path, quantize: str = "auto") -> dict[str, Any]:
    settings, embedder, _tokenizer = load_ours(quantize)
    all_texts = stored_texts(index_dir)
    texts = list(dict.fromkeys(all_texts))  # each distinct text once, as ingest embeds them
    rss_after_load = rss_now_mb()
    with HelperMemory() as helpers:
        started = time.perf_counter()
        vectors = embedder.embed(texts, batch_size=settings.embed_batch_size)
        seconds = time.perf_counter() - started
    assert len(vectors) == len(texts)
    return {
        "seconds": seconds,
        "chunks": len(texts),
        "distinct_chunk_texts": len(texts),
        "stored_chunks": len(all_texts),
        "batch_size": settings.embed_batch_size,
        "runtime": embedder.active_runtime,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": rss_peak_mb(),
        "helpers_before_mb": helpers.before_mb,
        "helpers_peak_mb": helpers.peak_mb,
        "helper_processes": helpers.most_processes,
    }


def worker_main(args: argparse.Namespace) -> None:
    files = discover_files(args.corpus.resolve())
    kind, index_dir = args.worker, args.index_dir
    if kind == "langchain":
        with tempfile.TemporaryDirectory(prefix="bench-langchain-") as tmp:
            result = run_lc(files, Path(tmp))
    elif kind == "embedder":
        result = run_embedder(index_dir, args.embed_quantize)
    else:  # ours, ray, prepare (an untimed index for row 5)
        result = run_ours(
            files, index_dir, args.workers, on_ray=kind == "ray", quantize=args.embed_quantize
        )
    args.worker_out.write_text(json.dumps(result), encoding="utf-8")
