"""Token F1 of extract mode against the embedded generator, paired, on questions not tuned on.

The extract mode's weights, passage count and threshold are tuned on one half of COVID-QA's
articles (``benchmarks/calibrate_extract.py``); this run asks a spread sample of the *other*
half's answerable questions in both modes, from the same index that ``rag eval --squad`` builds,
and reports each mode's token F1 (abstentions count 0, as in ``rag eval``), the ratio, and a
paired bootstrap interval of the ratio. Every answer is appended to ``--log`` as it comes (JSON
lines), so a run cut short keeps what it measured and a second run skips what is logged; the
figures are always computed from the log.

    python benchmarks/generate_vs_extract.py --log results/generate_vs_extract.jsonl \\
        --json results/generate_vs_extract.json [--sample 150] [--modes generate extract]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from calibrate_extract import halves  # a script beside this one

from ingest import TextDocument
from rag import RAG, Settings
from rag.eval.cache import cached_index, eval_index_dir
from rag.eval.squad import Question, _spread, f1_score, load_squad

REPO = Path(__file__).resolve().parents[1]
COVIDQA = REPO.parent / "shared" / "data" / "covidqa" / "200423_covidQA.json"


def report_half(contexts: dict[str, str], questions: list[Question]) -> list[Question]:
    """The answerable questions of the articles calibrate_extract.py reports on, in file order."""
    half = halves(contexts)
    return [q for q in questions if not q.impossible and half[q.source] == "report"]


def summarize(log: Path, qids: list[str]) -> dict[str, Any]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        rows[(row["mode"], row["qid"])] = row
    both = [q for q in qids if ("generate", q) in rows and ("extract", q) in rows]
    out: dict[str, Any] = {"questions": len(both)}
    if not both:
        return out
    f1 = {m: [rows[(m, q)]["f1"] for q in both] for m in ("generate", "extract")}
    for m, values in f1.items():
        out[m] = {
            "f1": round(sum(values) / len(values), 4),
            "abstained": round(sum(rows[(m, q)]["abstained"] for q in both) / len(both), 4),
            "seconds_per_question": round(
                sum(rows[(m, q)]["seconds"] for q in both) / len(both), 3
            ),
        }
    g, e = sum(f1["generate"]), sum(f1["extract"])
    out["ratio"] = round(e / g, 3) if g else None
    rng = random.Random(0)
    ratios = []
    for _ in range(2000):
        pick = [rng.randrange(len(both)) for _ in both]
        gs = sum(f1["generate"][i] for i in pick)
        if gs:
            ratios.append(sum(f1["extract"][i] for i in pick) / gs)
    ratios.sort()
    out["ratio_95"] = [
        round(ratios[int(0.025 * len(ratios))], 3),
        round(ratios[-1 - int(0.025 * len(ratios))], 3),
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sample", type=int, default=150)
    parser.add_argument("--modes", nargs="+", default=["generate", "extract"])
    args = parser.parse_args()
    settings = Settings()
    contexts, questions = load_squad(COVIDQA)
    index = eval_index_dir(f"squad-{COVIDQA.stem}", COVIDQA, settings, "paragraphs")
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    asked = _spread(report_half(contexts, questions), args.sample)
    done: set[tuple[str, str]] = set()
    if args.log.exists():
        done = {(r["mode"], r["qid"]) for r in map(json.loads, args.log.read_text().splitlines())}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with RAG.open(index, settings) as rag, args.log.open("a") as log:
        for mode in args.modes:
            for i, q in enumerate(asked):
                if (mode, q.qid) in done:
                    continue
                t0 = time.perf_counter()
                answer = rag.ask(q.text, answer_mode=mode)
                seconds = time.perf_counter() - t0
                f1 = 0.0 if answer.abstained else max(f1_score(answer.answer, a) for a in q.answers)
                row = {"mode": mode, "qid": q.qid, "f1": f1, "abstained": answer.abstained,
                       "seconds": round(seconds, 3), "answer": answer.answer}  # fmt: skip
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(f"{mode} {i + 1}/{len(asked)} f1 {f1:.2f} {seconds:.1f}s", flush=True)
    result = {"sample": len(asked), **summarize(args.log, [q.qid for q in asked])}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
