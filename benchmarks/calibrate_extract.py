"""Tune extract mode on one half of COVID-QA and report it on the other half, and on SciFact.

Every COVID-QA article is a document of the evaluation index (as in ``rag eval --squad``); the
articles are split into two halves by name (positions 0-1 of every 4 tune, 2-3 report). For each
question the passages are retrieved once (hybrid, the most passages of ``K_GRID``) and every
candidate sentence's signals are recorded (:func:`rag.extract.candidates`); a smaller passage
count reads the first passages only, with the word-overlap signal recomputed over them, as the
product computes it. Then, on the tune half only, for every passage count:

1. the weights of the signals, the margin for further sentences and their number are chosen for
   the best mean token F1 on the answerable questions (ties: the simpler, fewer sentences); then
   how much of each chosen sentence to quote (``min_question_words`` of
   :func:`rag.spans.answer_span`: the sentence whole, or less the runs at its edges that restate
   the question), for the best F1 again;
2. the sentence-level threshold (``extract_min_score``) is the one that maximises balanced
   accuracy between answering the answerable questions and abstaining on the held-out ones.
   Held-out questions are on-topic questions whose passages do not answer: every question asked
   of a copy of the index without its own article, in ten folds (one article in ten deleted per
   copy), so that every article's questions are held out once;

and the passage count (``extract_top_k``) is the one whose tune-half F1 at its threshold is best.

The report half gives the figures the defaults are judged by, beside the previous defaults on the
same run. Off-topic questions (:data:`rag.eval.unanswerable.OFF_TOPIC_QUESTIONS`) are reported
too. ``--scifact`` adds a check on other data: SciFact's claims (train and validation, those with
rationale sentences) against its 5,183 abstracts, whose rationale sentences are the sentences
that support or refute a claim; the share of claims whose chosen sentence is a rationale sentence
is reported for the chosen settings and the previous ones (no tuning on SciFact).

    python benchmarks/calibrate_extract.py [--scifact] [--json benchmarks/results/extract_calibration.json]
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import itertools
import json
import re
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ingest import TextDocument
from rag import RAG, Settings
from rag.eval.cache import cached_index, eval_index_dir
from rag.eval.squad import Question, f1_score, load_squad, quote_holds_answer
from rag.eval.unanswerable import (
    HOLDOUT_EVERY,
    OFF_TOPIC_QUESTIONS,
    heldout_index,
    holdout_sources,
)
from rag.extract import (
    Candidate,
    Weights,
    candidates,
    choose,
    lexical_scores,
    to_quote,
    weak_passages,
)

REPO = Path(__file__).resolve().parents[1]
COVIDQA = REPO.parent / "shared" / "data" / "covidqa" / "200423_covidQA.json"
SCIFACT = REPO.parent / "shared" / "data" / "scifact" / "scifact.zip"

K_GRID = (4, 6, 8, 10)
WEIGHT_GRID = {
    "cosine": (0.4, 0.55, 0.7),
    "lexical": (0.0, 0.15, 0.3, 0.45),
    "passage": (0.0, 0.1, 0.2),
    "context": (0.0, 0.05, 0.1),
    "numeric": (0.0, 0.05, 0.1, 0.2),
    "length": (0.0, 0.05, 0.1),
}
MARGINS = (0.0, 0.02, 0.05)
MAX_SENTENCES = (1, 2, 3)
TRIMS = (None, 1, 2, 3)
# The defaults before passage counts and ten held-out folds were calibrated, for comparison.
PREVIOUS = {"k": 4, "weights": Weights(cosine=0.4, lexical=0.45), "threshold": 0.41, "trim": 2}


@dataclass
class Item:
    """One question: its kind, its half, whether the passage rule abstains, its candidates."""

    q: Question | None
    kind: str  # "answerable", "heldout", "offtopic"
    half: str  # "tune", "report"
    weak: bool
    found: list[Candidate]
    text: str = ""


def collect(rag: RAG, question: str, abstain_below: float | None) -> tuple[bool, list[Candidate]]:
    passages = rag.retrieve(question, max(K_GRID))
    weak = weak_passages(passages, abstain_below)
    return weak, ([] if weak else candidates(question, passages, rag.embedder))


def at_k(found: list[Candidate], question: str, k: int) -> list[Candidate]:
    """The candidates of the first ``k`` passages, word overlap recomputed over them alone."""
    kept = [c for c in found if c.passage.n <= k]
    lexical = lexical_scores(question, [c.sentence.text for c in kept])
    return [replace(c, lexical=x) for c, x in zip(kept, lexical, strict=True)]


def items_at(items: list[Item], k: int) -> list[Item]:
    return [replace(i, found=at_k(i.found, i.text, k)) for i in items]


def answer_of(
    item: Item, w: Weights, margin: float, n: int, threshold: float | None, trim: int | None = None
) -> Any:
    """(abstained, text, quotes) as extract mode would answer with these parameters (``trim``:
    ``min_question_words`` of :func:`rag.spans.answer_span`, None to quote whole sentences)."""
    if item.weak or not item.found:
        return True, "", []
    chosen = choose(item.found, weights=w, margin=margin, max_sentences=n)
    if threshold is not None and chosen[0][1] < threshold:
        return True, "", []
    quotes = [to_quote(c, s, item.text, trim) for c, s in chosen]
    return False, " ".join(f"{' '.join(x.text.split())} [{x.n}]" for x in quotes), quotes


def metrics(
    items: list[Item], w: Weights, margin: float, n: int, t: float | None, trim: int | None = None
) -> dict:
    out: dict[str, Any] = {}
    answerable = [i for i in items if i.kind == "answerable"]
    f1 = sentence = cited = cited_ok = abstained = 0.0
    for item in answerable:
        assert item.q is not None
        gone, text, quotes = answer_of(item, w, margin, n, t, trim)
        abstained += gone
        if gone:
            continue
        f1 += max(f1_score(text, a) for a in item.q.answers)
        sentence += quote_holds_answer(quotes[0], item.q)
        cited += len(quotes)
        cited_ok += sum(quote_holds_answer(x, item.q) for x in quotes)
    k = max(len(answerable), 1)
    out.update(
        answerable=len(answerable),
        f1=round(f1 / k, 4),
        sentence_accuracy=round(sentence / k, 4),
        citation_precision=round(cited_ok / cited, 4) if cited else None,
        abstained_on_answerable=round(abstained / k, 4),
    )
    for kind in ("heldout", "offtopic"):
        group = [i for i in items if i.kind == kind]
        hits = sum(answer_of(i, w, margin, n, t, trim)[0] for i in group)
        out[f"{kind}_questions"] = len(group)
        out[f"{kind}_abstention_recall"] = round(hits / len(group), 4) if group else None
        out[f"{kind}_abstention_precision"] = (
            round(hits / (hits + abstained), 4) if hits + abstained else None
        )
    return out


def _features(c: Candidate) -> list[float]:
    passage = c.passage.similarity if c.passage.similarity is not None else 0.0
    return [c.cosine, c.lexical, passage, c.context, c.numeric, c.length]


def _text(chosen: list[Candidate]) -> str:
    quotes = [to_quote(c, 0.0) for c in chosen]
    return " ".join(f"{' '.join(x.text.split())} [{x.n}]" for x in quotes)


def best_score(item: Item, w: Weights) -> float | None:
    if item.weak or not item.found:
        return None
    return max(c.score(w) for c in item.found)


def calibrate_threshold(items: list[Item], w: Weights) -> tuple[float | None, float]:
    """The sentence threshold of best balanced accuracy, answerable against held-out questions."""
    pos = [best_score(i, w) for i in items if i.kind == "answerable"]
    neg = [best_score(i, w) for i in items if i.kind == "heldout"]
    grid = sorted({round(s, 3) for s in pos + neg if s is not None})
    threshold, balanced = None, -1.0
    for t in [None, *grid]:
        answered = sum(s is not None and (t is None or s >= t) for s in pos) / len(pos)
        refused = sum(s is None or (t is not None and s < t) for s in neg) / len(neg)
        if (answered + refused) / 2 > balanced + 1e-9:
            threshold, balanced = t, (answered + refused) / 2
    return threshold, balanced


def tune(items: list[Item]) -> dict[str, Any]:
    """Weights, margin, sentences, quoted part and threshold for one passage count, on ``items``
    (the tune half at that count)."""
    answerable = [i for i in items if i.kind == "answerable"]
    # Weights first, with one quoted sentence (the best of each question, scored in one matrix
    # product per question); then the margin and number of sentences with those weights.
    grid = np.array(list(itertools.product(*WEIGHT_GRID.values())), dtype=np.float64)
    total = np.zeros(len(grid))
    for item in answerable:
        if item.weak or not item.found:
            continue
        assert item.q is not None
        features = np.array([_features(c) for c in item.found])
        f1 = np.array([max(f1_score(_text([c]), a) for a in item.q.answers) for c in item.found])
        total += f1[np.argmax(features @ grid.T, axis=0)]
    w = Weights(**dict(zip(WEIGHT_GRID, grid[int(np.argmax(total))].tolist(), strict=True)))
    best: tuple[float, float, int] = (-1.0, 0.0, 1)
    for n in MAX_SENTENCES:
        for margin in MARGINS if n > 1 else (0.0,):
            f1_n = metrics(answerable, w, margin, n, None)["f1"]
            if f1_n > best[0] + 1e-9:
                best = (f1_n, margin, n)
    _, margin, n = best
    # Then how much of the chosen sentences to quote: whole (None), or less the edge runs that
    # restate the question (rag.spans.answer_span), for the best F1 with those sentences.
    trims = {t: metrics(answerable, w, margin, n, None, t)["f1"] for t in TRIMS}
    trim = max(TRIMS, key=lambda t: (trims[t], t is None))
    threshold, balanced = calibrate_threshold(items, w)
    return {
        "weights": w,
        "margin": margin,
        "max_sentences": n,
        "min_question_words": trim,
        "tune_f1_by_min_question_words": {str(k): v for k, v in trims.items()},
        "extract_min_score": threshold,
        "tune_balanced_accuracy": round(balanced, 4),
        "tune": metrics(items, w, margin, n, threshold, trim),
    }


def halves(sources: Iterable[str]) -> dict[str, str]:
    """Each article's half: "tune" for positions 0-1 of every 4 by name, "report" for 2-3."""
    return {s: "tune" if i % 4 < 2 else "report" for i, s in enumerate(sorted(sources))}


def covidqa_items(settings: Settings) -> list[Item]:
    contexts, questions = load_squad(COVIDQA)
    index = eval_index_dir(f"squad-{COVIDQA.stem}", COVIDQA, settings, "paragraphs")
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    half = halves(contexts).__getitem__
    items: list[Item] = []
    with RAG.open(index, settings) as rag:
        for q in questions:
            if not q.impossible:
                weak, found = collect(rag, q.text, settings.abstain_below)
                items.append(Item(q, "answerable", half(q.source), weak, found, q.text))
        for i, text in enumerate(OFF_TOPIC_QUESTIONS):
            weak, found = collect(rag, text, settings.abstain_below)
            items.append(Item(None, "offtopic", "tune" if i % 2 else "report", weak, found, text))
        embedder = rag.embedder
    # Held out: every question, asked of a copy of the index without its own article (one
    # article in HOLDOUT_EVERY deleted per copy; the first copy is rag eval's held-out index).
    for fold in range(HOLDOUT_EVERY):
        held = holdout_sources(list(contexts), fold)
        held_set = set(held)
        with RAG.open(heldout_index(index, held), settings, embedder=embedder) as rag:
            for q in questions:
                if q.source in held_set and not q.impossible:
                    weak, found = collect(rag, q.text, settings.abstain_below)
                    items.append(Item(q, "heldout", half(q.source), weak, found, q.text))
    return items


_LITERAL = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


@dataclass
class SciFact:
    """SciFact's abstracts as their sentences joined by a space (the zip stores each abstract as
    its list of sentences) with every sentence's span, and its claims with rationale sentences,
    each rationale as (abstract id, the sentence's span in that text)."""

    docs: dict[str, tuple[str, list[tuple[int, int]]]]
    claims: dict[tuple[str, str], str]
    rationales: dict[tuple[str, str], list[tuple[str, tuple[int, int]]]]


def load_scifact(path: Path = SCIFACT) -> SciFact:
    csv.field_size_limit(1 << 26)
    with zipfile.ZipFile(path) as z:
        corpus = list(csv.DictReader(io.TextIOWrapper(z.open("corpus_train.csv"), "utf-8")))
        rows = [
            row
            for name in ("claims_train.csv", "claims_validation.csv")
            for row in csv.DictReader(io.TextIOWrapper(z.open(name), "utf-8"))
        ]
    docs: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    for d in corpus:
        # A numpy array's repr: quoted sentences side by side, not a Python list.
        sentences = [ast.literal_eval(m.group()).strip() for m in _LITERAL.finditer(d["abstract"])]
        spans, at = [], 0
        for s in sentences:
            spans.append((at, at + len(s)))
            at += len(s) + 1
        docs[d["doc_id"]] = (" ".join(sentences), spans)
    claims: dict[tuple[str, str], str] = {}
    rationales: dict[tuple[str, str], list[tuple[str, tuple[int, int]]]] = {}
    for row in rows:
        if not row["evidence_doc_id"]:
            continue
        key = (row["id"], row["claim"])
        claims[key] = row["claim"]
        spans = docs[row["evidence_doc_id"]][1]
        for i in map(int, row["evidence_sentences"].strip("[]").split()):
            rationales.setdefault(key, []).append((row["evidence_doc_id"], spans[i]))
    return SciFact(docs, claims, rationales)


def scifact_claims(settings: Settings) -> list[dict[str, Any]]:
    """SciFact's claims with rationale sentences, each with the candidates of its passages."""
    data = load_scifact()
    index = eval_index_dir("scifact-sentences", SCIFACT, settings, "abstracts")
    documents = [TextDocument(source=k, text=t) for k, (t, _) in data.docs.items()]
    cached_index(index, lambda: documents, settings)
    out = []
    with RAG.open(index, settings) as rag:
        for key in sorted(data.rationales):
            text = data.claims[key]
            weak, found = collect(rag, text, settings.abstain_below)
            out.append(
                {"text": text, "evidence": data.rationales[key], "weak": weak, "found": found}
            )
    return out


def _is_rationale(c: Candidate, evidence: list[tuple[str, tuple[int, int]]]) -> bool:
    """The sentence overlaps a rationale sentence by at least half of the shorter of the two."""
    a, b = c.passage.start + c.sentence.start, c.passage.start + c.sentence.end
    for doc, (x, y) in evidence:
        overlap = min(b, y) - max(a, x)
        if doc == c.passage.source and overlap > 0 and overlap >= 0.5 * min(b - a, y - x):
            return True
    return False


def scifact_accuracy(claims: list[dict[str, Any]], k: int, w: Weights, t: float | None) -> dict:
    chosen_ok = answered = reachable = 0
    for claim in claims:
        found = [] if claim["weak"] else at_k(claim["found"], claim["text"], k)
        reachable += any(_is_rationale(c, claim["evidence"]) for c in found)
        if not found:
            continue
        best, score = choose(found, weights=w, max_sentences=1)[0]
        chosen_ok += _is_rationale(best, claim["evidence"])
        answered += t is None or score >= t
    n = len(claims)
    return {
        "claims": n,
        "sentence_accuracy": round(chosen_ok / n, 4),
        "a_candidate_is_a_rationale": round(reachable / n, 4),
        "answered_at_threshold": round(answered / n, 4),
    }


def _tune_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "weights": r["weights"].__dict__,
        "extract_min_score": r["extract_min_score"],
        **r["tune"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--scifact", action="store_true", help="check on SciFact's rationales")
    args = parser.parse_args()
    settings = Settings()  # the default embedder: int8 for a new CPU index
    t0 = time.perf_counter()
    items = covidqa_items(settings)
    seconds = time.perf_counter() - t0
    print(f"{len(items)} questions, {seconds / len(items):.3f} s each (retrieval and signals)")

    per_k: dict[int, dict[str, Any]] = {}
    for k in K_GRID:
        per_k[k] = tune([i for i in items_at(items, k) if i.half == "tune"])
        row = per_k[k]
        print(f"k={k}: {row['weights']}, threshold {row['extract_min_score']}: tune {row['tune']}")
    k = max(K_GRID, key=lambda x: (per_k[x]["tune"]["f1"], -x))
    chosen = per_k[k]
    w, margin, n = chosen["weights"], chosen["margin"], chosen["max_sentences"]
    trim, threshold = chosen["min_question_words"], chosen["extract_min_score"]
    report = [i for i in items_at(items, k) if i.half == "report"]
    before = [i for i in items_at(items, PREVIOUS["k"]) if i.half == "report"]
    result: dict[str, Any] = {
        "extract_top_k": k,
        **{key: value for key, value in chosen.items() if key != "weights"},
        "weights": w.__dict__,
        "tune_by_extract_top_k": {str(x): _tune_row(r) for x, r in per_k.items()},
        "abstain_below": settings.abstain_below,
        "heldout_folds": HOLDOUT_EVERY,
        "seconds_per_question": round(seconds / len(items), 4),
        "report": metrics(report, w, margin, n, threshold, trim),
        "report_without_threshold": metrics(report, w, margin, n, None, trim),
        "report_previous_defaults": metrics(
            before, PREVIOUS["weights"], 0.0, 1, PREVIOUS["threshold"], PREVIOUS["trim"]
        ),
        "previous_defaults": {**PREVIOUS, "weights": PREVIOUS["weights"].__dict__},
    }
    if args.scifact:
        claims = scifact_claims(settings)
        result["scifact"] = scifact_accuracy(claims, k, w, threshold)
        result["scifact_previous_defaults"] = scifact_accuracy(
            claims, PREVIOUS["k"], PREVIOUS["weights"], PREVIOUS["threshold"]
        )
        result["scifact_by_extract_top_k"] = {
            str(x): scifact_accuracy(claims, x, w, threshold) for x in K_GRID
        }
    shown = ("extract_top_k", "weights", "extract_min_score", "report", "report_previous_defaults",
             "scifact", "scifact_previous_defaults")  # fmt: skip
    print(json.dumps({key: result[key] for key in shown if key in result}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
