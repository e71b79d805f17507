"""Cold start: what a new process pays before its first result, on the CPU path.

Every run is a new process, as a user's `rag ask` is. Cases:

- ``open_retrieve``: ``from rag import RAG``, ``RAG.open(index)`` and the first ``retrieve()``,
  timed inside the process from before the import (the interpreter's own start is in
  ``exit_s``), with the model libraries it imported;
- ``ask_extract``, ``ask_generate``: ``rag ask QUESTION --index INDEX`` with ``answer_mode``
  extract or generate (``RAG_ANSWER_MODE``), timed from the spawn to the line after the answer
  (the first line of its sources: the answer is printed by then) and to the exit;
- ``ask_abstain``: ``rag ask`` with a question the documents do not answer, in the default answer
  mode: it abstains without a model call.

Each case runs with the embedder under ONNX Runtime (the default on a CPU: torch-free once the
ONNX file exists) and under torch (``RAG_EMBED_RUNTIME=torch``: sentence-transformers, as every
query process loaded it before); ``--baseline DIR`` adds the same cases run on another checkout of
the toolkit (``git archive REF | tar -x -C DIR``), as it was. Medians of ``--repeats`` runs; the
runs of all variants are interleaved, so that load on a shared machine falls on each alike.
The int8 embedder (the CPU default for a new index) runs under ONNX Runtime only, so the torch
variants are measured only on a float index (``RAG_EMBED_QUANTIZE=none rag ingest ...``).

    .venv/bin/rag ingest docs --index /tmp/demo-index
    .venv/bin/python benchmarks/cold_start.py --index /tmp/demo-index \
        --json benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUESTION = "How does the toolkit keep a prompt inside the model's context window?"
UNANSWERABLE = "What is the capital of Peru?"
HEAVY = ("torch", "transformers", "sentence_transformers", "langchain_core")
RUNTIMES = {"onnx": "auto", "torch": "torch"}
# In a new process: imports, open and the first retrieve, timed from before the first import.
PROBE = r"""
import sys, time, json
start = time.perf_counter()
from rag import RAG
rag = RAG.open(sys.argv[1])
opened = time.perf_counter()
hits = rag.retrieve(sys.argv[2])
done = time.perf_counter()
print(json.dumps({"open_s": opened - start, "retrieve_s": done - opened, "total_s": done - start,
                  "runtime": rag.embedder.active_runtime, "hits": len(hits),
                  "imported": [m for m in json.loads(sys.argv[3]) if m in sys.modules]}))
"""
CASES = ("open_retrieve", "ask_extract", "ask_generate", "ask_abstain")


def _env(runtime: str, source: Path | None, answer_mode: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["RAG_EMBED_RUNTIME"] = RUNTIMES[runtime]
    if answer_mode:
        env["RAG_ANSWER_MODE"] = answer_mode
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def run_probe(index: Path, runtime: str, source: Path | None, cwd: Path) -> dict[str, Any]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(index), QUESTION, json.dumps(HEAVY)],
        env=_env(runtime, source, None),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["exit_s"] = time.perf_counter() - start
    result["answer_s"] = result["total_s"]
    return result


def run_ask(
    index: Path, question: str, runtime: str, source: Path | None, cwd: Path, mode: str | None
) -> dict[str, Any]:
    """``python -m rag.cli ask`` (the ``rag`` script's code, also for a baseline checkout)."""
    cmd = [sys.executable, "-m", "rag.cli", "ask", question, "--index", str(index)]
    env = _env(runtime, source, mode)
    start = time.perf_counter()
    answered = None
    lines = []
    with subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            # The sources block follows the answer: by its first line the answer is printed.
            if answered is None and line.startswith(("Sources", "(The documents do not")):
                answered = time.perf_counter() - start
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    end = time.perf_counter() - start
    answer = "".join(lines).split("\n\n", 1)[0].strip()
    return {"answer_s": answered or end, "exit_s": end, "answer": answer[:200]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runtimes = [r for r in RUNTIMES if r != "torch" or not args.int8]
    variants = [("current", runtime, None) for runtime in runtimes]
    if args.baseline:
        variants += [("baseline", runtime, args.baseline.resolve()) for runtime in runtimes]
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:  # no ./rag.toml, and not the checkout on sys.path
        cwd = Path(tmp)
        for case in args.cases:
            for i in range(args.repeats):
                for code, runtime, source in variants:
                    if case == "open_retrieve":
                        row = run_probe(args.index, runtime, source, cwd)
                    elif case == "ask_abstain":
                        row = run_ask(args.index, UNANSWERABLE, runtime, source, cwd, None)
                    else:
                        mode = case.removeprefix("ask_")
                        row = run_ask(args.index, QUESTION, runtime, source, cwd, mode)
                    runs.setdefault((case, code, runtime), []).append(row)
                    print(f"{case:14} {code:8} {runtime:5} run {i + 1}: "
                          f"{row['answer_s']:6.2f} s to the result, {row['exit_s']:6.2f} s to exit",
                          flush=True)  # fmt: skip
    rows = [_summary(case, code, runtime, found) for (case, code, runtime), found in runs.items()]
    return {
        "what": "new process per run; answer_s: to the printed result (open_retrieve: imports + "
        "RAG.open + first retrieve, inside the process); exit_s: spawn to exit; medians",
        "index": str(args.index),
        "question": QUESTION,
        "unanswerable": UNANSWERABLE,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_after": list(os.getloadavg()),
        },
        "rows": rows,
        "ratios": _ratios(rows),
    }


def _summary(case: str, code: str, runtime: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "case": case,
        "code": code,
        "runtime": runtime,
        "answer_s": round(statistics.median(r["answer_s"] for r in found), 3),
        "exit_s": round(statistics.median(r["exit_s"] for r in found), 3),
        "runs_answer_s": [round(r["answer_s"], 3) for r in found],
    }
    if case == "open_retrieve":
        row["open_s"] = round(statistics.median(r["open_s"] for r in found), 3)
        row["retrieve_s"] = round(statistics.median(r["retrieve_s"] for r in found), 3)
        row["active_runtime"] = found[-1]["runtime"]
        row["imported"] = found[-1]["imported"]
    else:
        row["answer"] = found[-1]["answer"]
    return row


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case's time over the current ONNX path's: how many times longer the others take."""
    by = {(r["case"], r["code"], r["runtime"]): r for r in rows}
    out = []
    for (case, code, runtime), row in by.items():
        ours = by.get((case, "current", "onnx"))
        if ours is None or (code, runtime) == ("current", "onnx"):
            continue
        out.append(
            {
                "case": case,
                "slower": f"{code} {runtime}",
                "answer_ratio": round(row["answer_s"] / ours["answer_s"], 2),
                "exit_ratio": round(row["exit_s"] / ours["exit_s"], 2),
            }
        )
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'case':14} {'code':8} {'runtime':7} {'result s':>9} {'exit s':>8}  imported")
    for r in result["rows"]:
        extra = ",".join(r.get("imported", [])) if r["case"] == "open_retrieve" else ""
        print(f"{r['case']:14} {r['code']:8} {r['runtime']:7} {r['answer_s']:9.2f} "
              f"{r['exit_s']:8.2f}  {extra}")  # fmt: skip
    for q in result["ratios"]:
        print(f"{q['case']:14} {q['slower']:16} x{q['answer_ratio']:.2f} to the result, "
              f"x{q['exit_ratio']:.2f} to exit (vs current onnx)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, default=Path("/tmp/demo-index"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--baseline", type=Path, help="another checkout of the toolkit, run as well")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    if not (args.index / "CURRENT").exists() and not (args.index / "manifest.json").exists():
        sys.exit(f"No index at {args.index}: .venv/bin/rag ingest docs --index {args.index}")
    args.index = args.index.resolve()
    from rag.index.manifest import committed_embedder

    args.int8 = (committed_embedder(args.index) or "").endswith("#int8")
    if args.int8:
        print("int8 index: ONNX Runtime only (build a float index to time the torch embedder)")
    result = measure(args)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
