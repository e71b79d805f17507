"""Throughput of ``RAG.ask_many`` against a real vLLM server: sequential vs concurrent, one run.

    python benchmarks/ask_many_vllm.py                          # starts its own server
    python benchmarks/ask_many_vllm.py --llm-url http://127.0.0.1:8000/v1 --llm-model NAME
    python benchmarks/ask_many_vllm.py -n 16 --concurrency 8 --max-tokens 64 --json out.json

The same N questions go through ``ask_many`` twice in one process, against one server: with
``concurrency=1`` (one request at a time: the sequential baseline) and with ``concurrency=C``
(up to C requests in flight, which vLLM's continuous batching serves together). Both sides use
greedy decoding and the same ``max_tokens``; retrieval, packing and token counting are part of both
timings. Reported: questions per second for each side, completion tokens per second, failures, and
the ratio concurrent / sequential (above 1: concurrency pays).

Without ``--llm-url`` the script starts ``rag llm serve``'s server itself (vLLM from
``.venv-vllm``, the embedded default model, graph compilation on unless ``--enforce-eager``) and
stops it at the end. The index is built from this repository's ``docs/`` unless ``--index`` names
one. On a shared or 2-core machine the numbers are noisy: use ``--repeat`` and compare medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = (
    "How does the toolkit keep a prompt inside the model's context window?",
    "What files make up an index directory?",
    "How are citations checked against the passages?",
    "What happens when the documents do not contain the answer?",
    "Which embedding model is used by default?",
    "How are PDF page numbers recorded?",
    "What does hybrid retrieval combine?",
    "How is an index protected against a crash during ingestion?",
    "What does the manifest record?",
    "How are chunk sizes counted?",
    "What does maximal marginal relevance do?",
    "How do I use a vLLM server instead of the embedded model?",
    "What does rag ingest print at the end?",
    "How are follow-up questions handled in a chat?",
    "What happens when the index was built with another embedder?",
    "Which settings can be changed for a single question?",
)


def run_side(rag: Any, questions: list[str], concurrency: int, max_tokens: int) -> dict[str, Any]:
    from rag import Answer

    t0 = time.perf_counter()
    results = rag.ask_many(questions, concurrency=concurrency, max_tokens=max_tokens)
    seconds = time.perf_counter() - t0
    answers = [r for r in results if isinstance(r, Answer)]
    completion = sum(a.usage.completion_tokens for a in answers)
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "questions_per_s": len(questions) / seconds,
        "completion_tokens": completion,
        "completion_tokens_per_s": completion / seconds,
        "failures": [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, Answer)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--llm-url", help="a running server (default: start one)")
    p.add_argument("--llm-model", help="model name on that server")
    p.add_argument("--index", type=Path, help="index to ask (default: build one from docs/)")
    p.add_argument("-n", type=int, default=16, help="questions (cycled from a fixed list)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight, concurrent side")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1, help="runs per side, alternating")
    p.add_argument("--enforce-eager", action="store_true", help="started server: skip compilation")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    from rag import RAG, Settings
    from rag.llm.default_model import DEFAULT_MODEL_NAME, default_model_dir
    from rag.llm.serve import (
        CPU_KV_CACHE_BYTES,
        VLLMServer,
        free_port,
        is_cpu_build,
        resolve_vllm_python,
    )

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    base = Settings.model_validate({})
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        url, model = args.llm_url, args.llm_model
        if url is None:
            python = resolve_vllm_python(base)
            server = VLLMServer(
                python,
                str(default_model_dir(base.cache_dir)),
                DEFAULT_MODEL_NAME,
                port=free_port(),
                enforce_eager=args.enforce_eager,
                kv_cache_bytes=CPU_KV_CACHE_BYTES if is_cpu_build(python) else None,
                log_path=Path(tmp) / "vllm.log",
            )
            t0 = time.perf_counter()
            server.start()
            url, model = server.wait_ready(), DEFAULT_MODEL_NAME
            print(f"server ready in {time.perf_counter() - t0:.0f}s at {url}", file=sys.stderr)
        try:
            index = args.index
            if index is None:
                from ingest import ingest

                index = Path(tmp) / "index"
                ingest([REPO_ROOT / "docs"], index, base)
            settings = base.model_copy(
                update={"llm_url": url, "llm_model": model, "temperature": 0.0}
            )
            with RAG.open(index, settings) as rag:
                rag.ask(questions[0], max_tokens=8)  # warm-up: embedder, connection, /models
                runs: dict[str, list[dict[str, Any]]] = {"sequential": [], "concurrent": []}
                order = [("sequential", 1), ("concurrent", args.concurrency)]
                for r in range(args.repeat):
                    for side, conc in order if r % 2 == 0 else order[::-1]:
                        res = run_side(rag, questions, conc, args.max_tokens)
                        runs[side].append(res)
                        print(
                            f"{side:>10} (concurrency {conc}): {res['seconds']:.1f}s, "
                            f"{res['questions_per_s']:.2f} questions/s, "
                            f"{res['completion_tokens_per_s']:.1f} completion tokens/s, "
                            f"{len(res['failures'])} failed",
                            file=sys.stderr,
                        )
        finally:
            if server is not None:
                server.stop()

    seq = statistics.median(r["questions_per_s"] for r in runs["sequential"])
    con = statistics.median(r["questions_per_s"] for r in runs["concurrent"])
    summary = {
        "server": url,
        "model": model,
        "questions": args.n,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "sequential_questions_per_s": seq,
        "concurrent_questions_per_s": con,
        "ratio_concurrent_over_sequential": con / seq,
        "runs": runs,
    }
    print(
        f"\n{args.n} questions, max_tokens {args.max_tokens}, model {model}:\n"
        f"  sequential (concurrency 1): {seq:.2f} questions/s\n"
        f"  concurrent (concurrency {args.concurrency}): {con:.2f} questions/s\n"
        f"  ratio concurrent / sequential: {con / seq:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
