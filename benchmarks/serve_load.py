"""Load on ``rag serve``, beside the same work done by ``rag ask`` processes, one run.

    python benchmarks/serve_load.py                        # builds the demo index, starts vLLM
    python benchmarks/serve_load.py --index /tmp/demo-index --no-vllm
    python benchmarks/serve_load.py --llm-url http://127.0.0.1:8000/v1 --llm-model NAME \
        --json benchmarks/results/serve_load.json

Loopback only, and bounded: a fixed number of requests per row, every request with a time limit,
and the servers it started stopped at the end. Rows:

- ``retrieve`` at each ``--concurrency`` (default 1, 8, 32): ``--requests`` (500) ``POST
  /v1/retrieve`` calls (k=5, the default hybrid mode) to one warm ``rag serve``, from one async
  client keeping that many requests in flight. The questions cycle through a fixed list.
- ``ask extract``: ``--extract-requests`` (100) ``POST /v1/ask`` at concurrency 8 with no model
  server (the default answer mode then: sentences quoted with citations, no model call).
- ``retrieve during N uploads``: ``--burst-requests`` (20) ``/v1/retrieve`` one at a time while
  ``--upload-burst`` (60) uploads of one small file each arrive at once: what a question waits
  while writes queue (upload statuses: 200 ingested, 429 over ``--max-queued-writes``).
- ``rag ask`` processes: ``--process-asks`` (10) ``rag ask QUESTION --index DIR --json`` run one
  after another (a new process per question: imports, index and embedder loaded each time), in
  the default answer mode, with no model server: the work of one question without a warm server.
- With vLLM (started from ``.venv-vllm`` unless ``--llm-url``; ``--no-vllm`` skips these):
  ``--ask-requests`` (50) ``POST /v1/ask`` to a ``rag serve --llm-url`` at ``--ask-concurrency``
  (8) and the same questions at concurrency 1, then ``--process-asks`` ``rag ask --llm-url``
  processes one after another; greedy decoding, ``--max-tokens`` (64) each.

Reported per row: requests, concurrency, seconds, throughput (requests/s), p50/p95/p99 latency
and errors (a status other than 200, or no answer in time). The client shares the machine with
the server: on 2 cores its own work is part of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from ask_many_vllm import QUESTIONS  # noqa: E402

REQUEST_TIMEOUT = 300.0
START_TIMEOUT = 600.0


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(extra)
    return env


class ServeProcess:
    """One ``rag serve`` on a free loopback port, in its own process group."""

    def __init__(self, index: Path, work: Path, args: list[str]) -> None:
        from rag.llm.serve import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"serve-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "serve", "--index", str(index),
             "--port", str(self.port), "--upload-dir", str(work / "uploads"), *args],
            cwd=work, env=_clean_env(), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self) -> float:
        t0 = time.perf_counter()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"rag serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"rag serve not ready in {START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()


def summarize(
    label: str,
    latencies: list[float],
    errors: int,
    seconds: float,
    concurrency: int,
    abstained: int | None = None,
) -> dict[str, Any]:
    ok = sorted(latencies)
    n = len(ok) + errors

    def pct(q: float) -> float | None:
        if not ok:
            return None
        return ok[min(len(ok) - 1, max(0, round(q * len(ok)) - 1))] * 1000

    return {
        "row": label,
        "requests": n,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "throughput_rps": round(len(ok) / seconds, 2) if seconds else None,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ok) * 1000 if ok else None,
        "errors": errors,
        "abstained": abstained,  # answers that abstained before any model call (ask rows)
    }


async def _load(
    url: str, path: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[list[float], int, float, int]:
    latencies: list[float] = []
    errors = 0
    abstained = 0
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT) as client:

        async def worker() -> None:
            nonlocal errors, abstained
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                        abstained += bool(r.json().get("abstained"))
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0, abstained


async def _load_during_uploads(
    url: str, bodies: list[dict[str, Any]], uploads: int
) -> tuple[list[float], int, float, int, dict[int, int]]:
    """``bodies`` to /v1/retrieve one at a time while ``uploads`` uploads arrive at once."""
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=uploads + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT) as client:

        async def upload(i: int) -> None:
            text = f"Burst note {i}: the heron counts {i} reeds.".encode()
            try:
                r = await client.post(
                    "/v1/documents",
                    files=[("files", (f"burst-{i}.txt", text))],
                    headers={"X-Requested-With": "serve_load"},
                )
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                statuses[0] = statuses.get(0, 0) + 1

        burst = [asyncio.create_task(upload(i)) for i in range(uploads)]
        await asyncio.sleep(0.5)  # the uploads sent and waiting for the index
        latencies, errors, seconds, _ = await _load(url, "/v1/retrieve", bodies, 1)
        await asyncio.gather(*burst)
        return latencies, errors, seconds, 0, statuses


def load_during_uploads(
    label: str, url: str, bodies: list[dict[str, Any]], uploads: int
) -> dict[str, Any]:
    latencies, errors, seconds, _, statuses = asyncio.run(
        _load_during_uploads(url, bodies, uploads)
    )
    row = summarize(label, latencies, errors, seconds, 1)
    row["upload_statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def load(
    label: str, url: str, path: str, bodies: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    latencies, errors, seconds, abstained = asyncio.run(_load(url, path, bodies, concurrency))
    asks = path == "/v1/ask"
    row = summarize(label, latencies, errors, seconds, concurrency, abstained if asks else None)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def processes(
    label: str, index: Path, work: Path, questions: list[str], args: list[str]
) -> dict[str, Any]:
    """``rag ask`` run once per question, one after another."""
    latencies: list[float] = []
    errors = 0
    abstained = 0
    t0 = time.perf_counter()
    for q in questions:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "rag.cli", "ask", q, "--index", str(index), "--json", *args],
            cwd=work, env=_clean_env(), capture_output=True, timeout=REQUEST_TIMEOUT,
        )  # fmt: skip
        if done.returncode == 0:
            latencies.append(time.perf_counter() - started)
            abstained += bool(json.loads(done.stdout).get("abstained"))
        else:
            errors += 1
    row = summarize(label, latencies, errors, time.perf_counter() - t0, 1, abstained)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def cycle(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--index", type=Path, help="index to serve (default: build one from docs/)")
    p.add_argument("--requests", type=int, default=500, help="retrieve requests per concurrency")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--extract-requests", type=int, default=100)
    p.add_argument("--upload-burst", type=int, default=60,
                   help="uploads sent at once beside the last retrieve row (0: none)")  # fmt: skip
    p.add_argument("--server-args", default="",
                   help="more arguments for the rag serve of the retrieve rows, e.g. "
                   "'--max-queued-writes 64' to queue a whole burst")  # fmt: skip
    p.add_argument("--burst-requests", type=int, default=20,
                   help="retrieve requests, one at a time, during the upload burst")  # fmt: skip
    p.add_argument("--process-asks", type=int, default=10, help="rag ask processes per side")
    p.add_argument("--ask-requests", type=int, default=50, help="/v1/ask requests against vLLM")
    p.add_argument("--ask-concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--no-vllm", action="store_true", help="skip the rows that need vLLM")
    p.add_argument("--no-retrieve", action="store_true", help="only the rows that need vLLM")
    p.add_argument("--llm-url", help="a running OpenAI-compatible server (default: start vLLM)")
    p.add_argument("--llm-model", help="model name on that server")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)

    from rag.config import Settings

    rows: list[dict[str, Any]] = []
    base = Settings.model_validate({})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = args.index
        if index is None:
            from ingest import ingest

            index = work / "demo-index"
            ingest([REPO_ROOT / "docs"], index, base)
        index = index.resolve()

        if not args.no_retrieve:
            rows += retrieve_rows(args, index, work)
        if not args.no_vllm:
            rows += vllm_rows(args, base, index, work)

    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def retrieve_rows(args: argparse.Namespace, index: Path, work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    server = ServeProcess(index, work, shlex.split(args.server_args))
    try:
        print(f"rag serve ready in {server.wait_ready():.1f}s", file=sys.stderr)
        load("warm-up", server.url, "/v1/retrieve", [{"question": "warm-up"}] * 5, 1)
        for c in args.concurrency:
            bodies = [{"question": q, "k": 5} for q in cycle(args.requests)]
            rows.append(load("serve /v1/retrieve", server.url, "/v1/retrieve", bodies, c))
        bodies = [{"question": q} for q in cycle(args.extract_requests)]
        rows.append(load("serve /v1/ask (extract)", server.url, "/v1/ask", bodies, 8))
        if args.upload_burst:
            bodies = [{"question": q, "k": 5} for q in cycle(args.burst_requests)]
            label = f"serve /v1/retrieve during {args.upload_burst} uploads"
            rows.append(load_during_uploads(label, server.url, bodies, args.upload_burst))
    finally:
        server.stop()
    rows.append(processes("rag ask processes (extract)", index, work, cycle(args.process_asks), []))
    return rows


def vllm_rows(args: argparse.Namespace, base: Any, index: Path, work: Path) -> list[dict[str, Any]]:
    from rag.llm.default_model import DEFAULT_MODEL_NAME, default_model_dir
    from rag.llm.serve import (
        CPU_KV_CACHE_BYTES,
        VLLMServer,
        free_port,
        is_cpu_build,
        resolve_vllm_python,
    )

    rows: list[dict[str, Any]] = []
    vllm = None
    url, model = args.llm_url, args.llm_model
    if url is None:
        python = resolve_vllm_python(base)
        vllm = VLLMServer(
            python, str(default_model_dir(base.cache_dir)), DEFAULT_MODEL_NAME, port=free_port(),
            enforce_eager=True, kv_cache_bytes=CPU_KV_CACHE_BYTES if is_cpu_build(python) else None,
            log_path=work / "vllm.log",
        )  # fmt: skip
        vllm.start()
        url, model = vllm.wait_ready(START_TIMEOUT), DEFAULT_MODEL_NAME
    llm = ["--llm-url", url, "--llm-model", model, "--max-tokens", str(args.max_tokens),
           "--temperature", "0"]  # fmt: skip
    try:
        server = ServeProcess(index, work, llm)
        try:
            server.wait_ready()
            bodies = [{"question": q} for q in cycle(args.ask_requests)]
            # Untimed: one request alone, then one full batch, so that neither timed row pays
            # for the server's first requests of either shape.
            load("warm-up", server.url, "/v1/ask", bodies[:1], 1)
            warm = bodies[: args.ask_concurrency]
            load("warm-up", server.url, "/v1/ask", warm, args.ask_concurrency)
            label = "serve /v1/ask (vLLM)"
            rows.append(load(label, server.url, "/v1/ask", bodies, 1))
            rows.append(load(label, server.url, "/v1/ask", bodies, args.ask_concurrency))
        finally:
            server.stop()
        rows.append(
            processes("rag ask processes (vLLM)", index, work, cycle(args.process_asks), llm)
        )
    finally:
        if vllm is not None:
            vllm.stop()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

    print(
        "| row | requests | concurrency | throughput (req/s) | p50 ms | p95 ms | p99 ms | errors "
        "| abstained |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['row']} | {r['requests']} | {r['concurrency']} | {r['throughput_rps']} | "
            f"{ms(r['p50_ms'])} | {ms(r['p95_ms'])} | {ms(r['p99_ms'])} | {r['errors']} | "
            f"{'-' if r['abstained'] is None else r['abstained']} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
