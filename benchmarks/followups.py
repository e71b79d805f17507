"""Follow-up questions in extract mode (issue 20, item 3): hit rates of three ways to read them.

The pairs of ``benchmarks/data/followups.json`` (a first question, then a follow-up, each with
gold substrings of the answering text; written by hand over ``docs/*.md`` and the shared PDFs)
are asked of an index of those documents, built in a temporary directory with ``ingest``. Every
follow-up is answered in extract mode

- ``alone``: the follow-up as a first question, no conversation;
- ``joined``: the previous behaviour of ``Chat``: retrieval and sentence scores against the
  earlier question and the follow-up joined into one text;
- ``conversation``: ``Chat.send`` now (:mod:`rag.followup`), with the first question and its
  answer as the history;
- ``conversation_if_refers_back``: the same reading for the follow-ups that refer back
  (``rag.followup.depends``: "it", "its", "these", "And ..."); the others answered alone.

A follow-up hits when its quoted text holds a gold substring (whitespace, case and Unicode
compatibility forms aside); ``cited`` when a passage it cites does; ``read`` when a passage it
read does. Unanswerable follow-ups should abstain. The first question is asked alone and as the
first turn of a chat, which must give the same answer.

Tuning: the pairs at odd ids are the tune half, the others the report half. On the tune half the
weight of the count signal (``rag.followup.COUNT_WEIGHT``) and whether to read every follow-up
with the conversation or only those that refer back are chosen for the most correct follow-ups (a hit, or an abstention on an
unanswerable one; ties: the smaller weight, then reading only the follow-ups that refer back).
The figures of the report half are the ones to judge by.

    python benchmarks/followups.py [--json benchmarks/results/followups.json] [--index DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ingest import ingest
from rag import RAG, Settings, followup
from rag.answer import Answer
from rag.extract import DEFAULT_WEIGHTS, extract_answer

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "benchmarks" / "data" / "followups.json"
PDFS = REPO.parent / "shared" / "data" / "documents" / "pdf"
COUNT_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2)
METHODS = ("alone", "joined", "conversation", "conversation_if_refers_back")


def normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def holds(texts: Sequence[str], gold: Sequence[str]) -> bool:
    joined = normal(" ".join(texts))
    return any(normal(g) in joined for g in gold)


def build_index(root: Path, settings: Settings) -> Path:
    """The documents under ``root/corpus`` (``docs/`` and ``pdf/`` as in the pairs' sources),
    ingested into ``root/index``."""
    corpus = root / "corpus"
    (corpus / "docs").mkdir(parents=True)
    (corpus / "pdf").mkdir()
    for f in sorted((REPO / "docs").glob("*.md")):
        shutil.copy(f, corpus / "docs" / f.name)
    for f in sorted(PDFS.glob("*.pdf")):
        shutil.copy(f, corpus / "pdf" / f.name)
    report = ingest([corpus], root / "index", settings)
    print(f"ingested {report.files_ingested} files, {report.chunks_total} chunks")
    return root / "index"


def outcome(answer: Answer, gold: Sequence[str]) -> dict[str, Any]:
    return {
        "abstained": answer.abstained,
        "hit": bool(gold) and not answer.abstained and holds([q.text for q in answer.quotes], gold),
        "cited": bool(gold) and holds([c.text for c in answer.citations], gold),
        "read": bool(gold) and holds([p.text for p in answer.passages], gold),
        "answer": answer.answer[:300],
    }


class Reader:
    """One pair's follow-up read with its conversation: retrieval and signals computed once, so
    that every count weight is tried on the same candidates."""

    def __init__(self, rag: RAG, first: str, message: str, k: int) -> None:
        self.rag, self.message = rag, message
        self.depends = followup.depends(message)
        joined = followup.conversation(message, [(first, "")])
        assert joined is not None
        self.passages = rag.retrieve(joined, k)
        self.found = followup.candidates_for(message, joined, self.passages, rag.embedder)

    def answer(self, count_weight: float) -> Answer:
        s = self.rag.settings
        return extract_answer(
            self.message,
            self.passages,
            self.rag.embedder,
            abstain_phrase=self.rag._templates().abstain_phrase,
            abstain_below=s.abstain_below,
            min_score=s.extract_min_score,
            model=f"extract:{self.rag.embedder.name}",
            found=self.found,
            weights=replace(DEFAULT_WEIGHTS, numeric=count_weight),
        )


def run_pair(rag: RAG, pair: dict[str, Any], k: int) -> dict[str, Any]:
    first, message, gold = pair["first"], pair["followup"], pair["gold"]
    first_alone = rag.ask(first)
    chat = rag.chat()
    first_chat = chat.send(first)
    reader = Reader(rag, first, message, k)
    alone = rag.ask(message)
    answers: dict[str, Any] = {
        "alone": alone,
        "joined": rag.ask(message, query=f"{first} {message}"),
        "conversation": chat.send(message),
    }
    tried = {w: reader.answer(w) for w in COUNT_WEIGHTS}
    return {
        "id": pair["id"],
        "half": "tune" if pair["id"] % 2 else "report",
        "kind": pair["kind"],
        "depends": reader.depends,
        "first": {
            **outcome(first_alone, pair["first_gold"]),
            "same_in_chat": first_chat.quotes == first_alone.quotes
            and first_chat.abstained == first_alone.abstained,
        },
        **{name: outcome(a, gold) for name, a in answers.items()},
        "_tried": {w: outcome(a, gold) for w, a in tried.items()},
        "_alone": outcome(alone, gold),
    }


def variant(row: dict[str, Any], count_weight: float, always: bool) -> dict[str, Any]:
    """The outcome of reading with the conversation: every follow-up (``always``) or only those
    that refer back (the others are answered alone, as first questions are)."""
    if always or row["depends"]:
        result: dict[str, Any] = row["_tried"][count_weight]
        return result
    alone: dict[str, Any] = row["_alone"]
    return alone


def correct(row: dict[str, Any], out: dict[str, Any]) -> bool:
    return bool(out["abstained"]) if row["kind"] == "unanswerable" else bool(out["hit"])


def summary(rows: list[dict[str, Any]], pick: Callable[[dict[str, Any]], dict[str, Any]]) -> dict:
    def share(kind: str, key: str) -> dict[str, Any]:
        of = [r for r in rows if r["kind"] == kind]
        n = sum(bool(pick(r)[key]) for r in of)
        return {"n": n, "of": len(of), "rate": round(n / len(of), 3) if of else None}

    return {
        "dependent_hit": share("dependent", "hit"),
        "dependent_abstained": share("dependent", "abstained"),
        "dependent_cited": share("dependent", "cited"),
        "dependent_read": share("dependent", "read"),
        "switch_hit": share("switch", "hit"),
        "switch_abstained": share("switch", "abstained"),
        "unanswerable_abstained": share("unanswerable", "abstained"),
        "correct": sum(correct(r, pick(r)) for r in rows),
        "of": len(rows),
    }


def tune(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    table = []
    for always in (False, True):
        for w in COUNT_WEIGHTS:
            n = sum(correct(r, variant(r, w, always)) for r in rows)
            table.append({"count_weight": w, "always": always, "correct": n, "of": len(rows)})
    best = max(table, key=lambda t: (t["correct"], -t["count_weight"], not t["always"]))
    return best, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--index", type=Path, help="reuse (or build once into) this index")
    args = parser.parse_args()
    settings = Settings.model_validate({"answer_mode": "extract"})
    pairs = json.loads(args.pairs.read_text())["pairs"]
    with tempfile.TemporaryDirectory(prefix="followups-") as tmp:
        index = args.index
        if index is None or not (index / "CURRENT").exists():
            t0 = time.perf_counter()
            built = build_index(Path(tmp), settings)
            print(f"index built in {time.perf_counter() - t0:.0f} s")
            if index is not None:
                shutil.copytree(built, index)
            index = built
        t0 = time.perf_counter()
        with RAG.open(index, settings) as rag:
            k = max(settings.top_k, settings.extract_top_k)
            rows = [run_pair(rag, p, k) for p in pairs]
        seconds = time.perf_counter() - t0

    halves = {h: [r for r in rows if r["half"] == h] for h in ("tune", "report")}
    best, table = tune(halves["tune"])
    chosen = {"count_weight": best["count_weight"], "always": best["always"]}
    product = {"count_weight": followup.COUNT_WEIGHT, "always": True}
    mismatch = [
        r["id"]
        for r in rows
        if r["conversation"]["answer"] != variant(r, followup.COUNT_WEIGHT, True)["answer"]
    ]
    result: dict[str, Any] = {
        "pairs": str(
            args.pairs.relative_to(REPO) if args.pairs.is_relative_to(REPO) else args.pairs
        ),
        "commit": _commit(),
        "settings": {
            key: getattr(settings, key)
            for key in ("retrieval_mode", "extract_top_k", "extract_min_score", "abstain_below")
        },
        "seconds": round(seconds, 1),
        "tune_choice": chosen,
        "product": product,
        "product_is_tune_choice": chosen == product,
        "conversation_differs_from_its_variant": mismatch,
        "tune_table": table,
    }
    for half, of in halves.items():
        result[half] = {
            "first_hit": sum(r["first"]["hit"] for r in of),
            "first_same_in_chat": sum(r["first"]["same_in_chat"] for r in of),
            "first_of": len(of),
            **{m: summary(of, lambda r, m=m: _method(r, m)) for m in METHODS},
        }
    result["rows"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    for r, full in zip(result["rows"], rows, strict=True):
        r["conversation_if_refers_back"] = variant(full, followup.COUNT_WEIGHT, False)
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0 if chosen == product and not mismatch else 1


def _method(row: dict[str, Any], method: str) -> dict[str, Any]:
    if method == "conversation_if_refers_back":
        return variant(row, followup.COUNT_WEIGHT, False)
    picked: dict[str, Any] = row[method]
    return picked


def _print(result: dict[str, Any]) -> None:
    print(f"tune choice {result['tune_choice']}, product {result['product']}")
    for t in result["tune_table"]:
        print(f"  tune: count_weight {t['count_weight']:.2f} always {t['always']!s:5} "
              f"correct {t['correct']}/{t['of']}")  # fmt: skip
    for half in ("tune", "report"):
        h = result[half]
        print(f"{half}: first questions hit {h['first_hit']}/{h['first_of']} "
              f"(same in a chat: {h['first_same_in_chat']}/{h['first_of']})")  # fmt: skip
        for m in METHODS:
            s = h[m]
            print(
                f"  {m:20} dependent hit {s['dependent_hit']['n']}/{s['dependent_hit']['of']}"
                f" abstained {s['dependent_abstained']['n']}"
                f" cited {s['dependent_cited']['n']} read {s['dependent_read']['n']}"
                f" | switch hit {s['switch_hit']['n']}/{s['switch_hit']['of']}"
                f" | unanswerable abstained {s['unanswerable_abstained']['n']}"
                f"/{s['unanswerable_abstained']['of']} | correct {s['correct']}/{s['of']}"
            )
    if result["conversation_differs_from_its_variant"]:
        print("Chat.send differs from the variant it should equal:",
              result["conversation_differs_from_its_variant"])  # fmt: skip


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
