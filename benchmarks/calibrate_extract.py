"""Tune extract mode on one half of COVID-QA and report it on the other half.

Every COVID-QA article is a document of the evaluation index (as in ``rag eval --squad``); the
articles are split into two halves by name (positions 0-1 of every 4 tune, 2-3 report). For each
question the passages are retrieved once (hybrid, top_k 4) and every candidate sentence's signals
are recorded (:func:`rag.extract.candidates`); then, on the tune half only:

1. the weights of the signals, the margin for further sentences and their number are chosen for
   the best mean token F1 on the answerable questions (ties: the simpler, fewer sentences); then
   how much of each chosen sentence to quote (``min_question_words`` of
   :func:`rag.spans.answer_span`: the sentence whole, or less the runs at its edges that restate
   the question), for the best F1 again;
2. the sentence-level threshold (``extract_min_score``) is the one that maximises balanced
   accuracy between answering the answerable questions and abstaining on the held-out ones
   (questions whose article is deleted from a copy of the index: on-topic passages that do not
   answer), as ``benchmarks/calibrate_abstention.py`` chose ``abstain_below``.

The report half gives the figures the defaults are judged by. Off-topic questions
(:data:`rag.eval.unanswerable.OFF_TOPIC_QUESTIONS`) are reported too.

    python benchmarks/calibrate_extract.py [--json benchmarks/results/extract_calibration.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest import TextDocument
from rag import RAG, Settings
from rag.eval.cache import cached_index, eval_index_dir
from rag.eval.squad import Question, f1_score, load_squad, quote_holds_answer
from rag.eval.unanswerable import OFF_TOPIC_QUESTIONS, heldout_index, holdout_sources
from rag.extract import Candidate, Weights, candidates, choose, to_quote, weak_passages

REPO = Path(__file__).resolve().parents[1]
COVIDQA = REPO.parent / "shared" / "data" / "covidqa" / "200423_covidQA.json"

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
    passages = rag.retrieve(question)
    weak = weak_passages(passages, abstain_below)
    return weak, ([] if weak else candidates(question, passages, rag.embedder))


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--data", type=Path, default=COVIDQA, help="SQuAD-format file")
    args = parser.parse_args()
    # The float embedder, as in the figures recorded so far (int8 ranks sentences slightly apart).
    settings = Settings.model_validate({"embed_quantize": "none"})
    contexts, questions = load_squad(args.data)
    index = eval_index_dir(f"squad-{args.data.stem}", args.data, settings, "paragraphs")
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    held = holdout_sources(list(contexts))
    heldout = heldout_index(index, held)
    order = {s: i for i, s in enumerate(sorted(contexts))}

    def half(source: str) -> str:
        return "tune" if order[source] % 4 < 2 else "report"

    t0 = time.perf_counter()
    items: list[Item] = []
    with RAG.open(index, settings) as rag:
        for q in questions:
            if q.impossible:
                continue
            items.append(
                Item(
                    q,
                    "answerable",
                    half(q.source),
                    *collect(rag, q.text, settings.abstain_below),
                    text=q.text,
                )
            )
        for i, text in enumerate(OFF_TOPIC_QUESTIONS):
            items.append(
                Item(
                    None,
                    "offtopic",
                    "tune" if i % 2 else "report",
                    *collect(rag, text, settings.abstain_below),
                    text=text,
                )
            )
        embedder = rag.embedder
    with RAG.open(heldout, settings, embedder=embedder) as rag:
        held_set = set(held)
        for q in questions:
            if q.source in held_set:
                items.append(
                    Item(
                        q,
                        "heldout",
                        half(q.source),
                        *collect(rag, q.text, settings.abstain_below),
                        text=q.text,
                    )
                )
    seconds = time.perf_counter() - t0
    print(f"{len(items)} questions, {seconds / len(items):.3f} s each (retrieval and signals)")

    tune = [i for i in items if i.half == "tune"]
    report = [i for i in items if i.half == "report"]
    tune_answerable = [i for i in tune if i.kind == "answerable"]
    # Weights first, with one quoted sentence (the best of each question, scored in one matrix
    # product per question); then the margin and number of sentences with those weights.
    grid = np.array(list(itertools.product(*WEIGHT_GRID.values())), dtype=np.float64)
    total = np.zeros(len(grid))
    for item in tune_answerable:
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
            f1_n = metrics(tune_answerable, w, margin, n, None)["f1"]
            if f1_n > best[0] + 1e-9:
                best = (f1_n, margin, n)
    _, margin, n = best
    print(f"weights {w}, margin {margin}, sentences {n}: tune F1 {best[0]:.4f}")
    # Then how much of the chosen sentences to quote: whole (None), or less the edge runs that
    # restate the question (rag.spans.answer_span), for the best F1 with those sentences.
    trims: dict[int | None, float] = {
        t: metrics(tune_answerable, w, margin, n, None, t)["f1"] for t in TRIMS
    }
    trim = max(TRIMS, key=lambda t: (trims[t], t is None))
    print(f"quote trimmed at runs of {trim} question words: tune F1 {trims[trim]:.4f} {trims}")

    # Balanced accuracy of the sentence threshold: answerable vs held-out questions of the tune half.
    pos = [best_score(i, w) for i in tune if i.kind == "answerable"]
    neg = [best_score(i, w) for i in tune if i.kind == "heldout"]
    grid = sorted({round(s, 3) for s in pos + neg if s is not None})
    threshold, balanced = None, -1.0
    for t in [None, *grid]:
        answered = sum(s is not None and (t is None or s >= t) for s in pos) / len(pos)
        refused = sum(s is None or (t is not None and s < t) for s in neg) / len(neg)
        if (answered + refused) / 2 > balanced + 1e-9:
            threshold, balanced = t, (answered + refused) / 2
    print(f"threshold {threshold}: tune balanced accuracy {balanced:.4f}")

    result = {
        "weights": w.__dict__,
        "margin": margin,
        "max_sentences": n,
        "min_question_words": trim,
        "tune_f1_by_min_question_words": {str(k): v for k, v in trims.items()},
        "extract_min_score": threshold,
        "tune_balanced_accuracy": round(balanced, 4),
        "abstain_below": settings.abstain_below,
        "heldout_documents": len(held),
        "seconds_per_question": round(seconds / len(items), 4),
        "tune": metrics(tune, w, margin, n, threshold, trim),
        "report": metrics(report, w, margin, n, threshold, trim),
        "report_without_threshold": metrics(report, w, margin, n, None, trim),
        "tune_whole_sentences": metrics(tune, w, margin, n, threshold),
        "report_whole_sentences": metrics(report, w, margin, n, threshold),
    }
    print(
        json.dumps({k: result[k] for k in ("tune", "report", "report_without_threshold")}, indent=1)
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
