"""Extractive answers: the sentences of the retrieved passages that best answer the question.

No language model is called. Each sentence of the best passages (split by :mod:`rag.sentences`,
with exact spans) is scored by a weighted sum of

- ``cosine``: the index's own embedder, question against sentence (one batch per question);
- ``lexical``: the share of the question's idf-weighted content words that the sentence holds
  (idf over the candidate sentences, so words every passage shares count little);
- ``passage``: the cosine similarity of the passage the sentence comes from (its retrieval
  evidence, which also orders the passages);
- ``context``: the best cosine of a neighbouring sentence of the same passage, since an answer
  often follows the sentence that restates the question;
- ``numeric``: 1 when the question asks for a quantity or a time ("how many", "when", "what
  percentage") and the sentence holds a number, else 0 (English questions only; it weighs 0);
- ``length``: the sentence's words up to FULL_WORDS, over FULL_WORDS: a fragment ("Justices of
  the Supreme Court.") can match the question closely and still answer nothing.

Sentences, words and content words are those of any script (:mod:`rag.sentences`,
:mod:`rag.spans`): a Chinese sentence counts a word per two characters and shares pairs of
characters with the question. The embedder may know only English (all-MiniLM-L6-v2 gives a Greek
question about football a cosine of 0.74 with a Greek sentence about Mount Olympus), so in other
languages the word overlap decides the choice. Answering sentences in German, Russian, Greek and
Chinese score above the default ``min_score``, other topics' sentences below it
(tests/rag/test_extract.py).

A sentence that ends with a colon introduces what follows and is never quoted.

The best sentence is chosen, with up to two more that score within ``margin`` of it. Of each, the
part that answers is quoted (:func:`rag.spans.answer_span`): the sentence less the runs at its
edges that only restate the question, still an exact substring with exact character spans. The
answer abstains by the passage rule of generate mode (no passage reaches ``abstain_below``) and
when the best sentence scores below ``min_score``. Weights, margin, trimming, threshold and the
number of passages read (``Settings.extract_top_k``) were tuned on one half of COVID-QA and
reported on the other and on SciFact (benchmarks/calibrate_extract.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.answer import Answer, Citation, Quote
from rag.sentences import Sentence, split_sentences
from rag.spans import MIN_QUESTION_WORDS, answer_span, terms

# Sentences with fewer words are headings or fragments: context for neighbours, never quoted.
MIN_WORDS = 4
FULL_WORDS = 20
MAX_SENTENCES = 3

_ASKS_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|old|often|far|large|big|high|small|fast|soon|frequently)|"
    r"when|what (?:year|percentage|proportion|fraction|number|age|date|time|rate|ratio|size|dose)|"
    r"which year|at what (?:age|temperature|dose))\b",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Weights:
    """How much each signal counts in a sentence's score. The defaults are those that gave the best
    token F1 on the tune half of COVID-QA, reading 10 passages (benchmarks/results/
    extract_calibration.json): the question's cosine and its words decide; the neighbour and
    length signals break near-ties; the passage and number signals added nothing, so they weigh
    0 unless a caller sets them."""

    cosine: float = 0.4
    lexical: float = 0.3
    passage: float = 0.0
    context: float = 0.05
    numeric: float = 0.0
    length: float = 0.05


DEFAULT_WEIGHTS = Weights()
# Further sentences are quoted when they score within this of the best one; on COVID-QA, whose
# answers are mostly one sentence, quoting one sentence (margin 0) gave the best F1.
MARGIN = 0.0


@dataclass(frozen=True)
class Candidate:
    """One sentence of one retrieved passage and its signals."""

    passage: Citation
    sentence: Sentence
    cosine: float
    lexical: float
    context: float
    numeric: float

    @property
    def length(self) -> float:
        return min(self.sentence.words, FULL_WORDS) / FULL_WORDS

    def score(self, w: Weights = DEFAULT_WEIGHTS) -> float:
        passage = self.passage.similarity if self.passage.similarity is not None else 0.0
        return (
            w.cosine * self.cosine
            + w.lexical * self.lexical
            + w.passage * passage
            + w.context * self.context
            + w.numeric * self.numeric
            + w.length * self.length
        )


def candidates(question: str, passages: Sequence[Citation], embedder: Any) -> list[Candidate]:
    """Every quotable sentence of ``passages`` with its signals; sentences that overlapping
    chunks share are kept once, under the better-ranked passage."""
    found: list[tuple[Citation, list[Sentence]]] = []
    seen: set[tuple[str, int | None, int]] = set()
    for p in passages:
        kept = []
        for s in split_sentences(p.text):
            key = (p.source, p.page, p.start + s.start)
            if _quotable(s) and key not in seen:
                seen.add(key)
                kept.append(s)
        if kept:
            found.append((p, kept))
    texts = [s.text for _, sents in found for s in sents]
    if not texts:
        return []
    vectors = np.asarray(embedder.embed([question, *texts]), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    cosines = (vectors[1:] @ vectors[0]) / np.clip(norms[1:] * norms[0], 1e-12, None)
    lexical = lexical_scores(question, texts)
    asks_number = _ASKS_NUMBER.search(question) is not None
    out: list[Candidate] = []
    i = 0
    for p, sents in found:
        span = cosines[i : i + len(sents)]
        for j, s in enumerate(sents):
            neighbours = [float(span[k]) for k in (j - 1, j + 1) if 0 <= k < len(sents)]
            out.append(
                Candidate(
                    passage=p,
                    sentence=s,
                    cosine=float(span[j]),
                    lexical=lexical[i + j],
                    context=max(neighbours, default=0.0),
                    numeric=float(asks_number and _DIGIT.search(s.text) is not None),
                )
            )
        i += len(sents)
    return out


def choose(
    found: Sequence[Candidate],
    *,
    weights: Weights = DEFAULT_WEIGHTS,
    margin: float = MARGIN,
    max_sentences: int = MAX_SENTENCES,
) -> list[tuple[Candidate, float]]:
    """The best sentence and up to ``max_sentences - 1`` more within ``margin`` of it, best first."""
    ranked = sorted(((c, c.score(weights)) for c in found), key=lambda x: -x[1])
    chosen: list[tuple[Candidate, float]] = []
    texts: set[str] = set()
    for c, score in ranked:
        if len(chosen) == max_sentences or (chosen and score < chosen[0][1] - margin):
            break
        normalised = " ".join(c.sentence.text.split())
        if normalised not in texts:
            texts.add(normalised)
            chosen.append((c, score))
    return chosen


def weak_passages(passages: Sequence[Citation], abstain_below: float | None) -> bool:
    """Generate mode's rule: no passage, or none whose cosine reaches ``abstain_below``."""
    if not passages:
        return True
    if abstain_below is None:
        return False
    known = [p.similarity for p in passages if p.similarity is not None]
    return bool(known) and max(known) < abstain_below


def extract_answer(
    question: str,
    passages: Sequence[Citation],
    embedder: Any,
    *,
    abstain_phrase: str,
    abstain_below: float | None,
    min_score: float | None,
    model: str,
    query: str | None = None,
    found: Sequence[Candidate] | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
) -> Answer:
    """An extractive :class:`Answer`: quoted sentences and their passages, or an abstention.

    ``query`` (default: the question) is what sentences are compared with, such as a follow-up
    question made standalone. ``found``: the candidate sentences scored by the caller instead (a
    follow-up read with its conversation, :mod:`rag.followup`), chosen with ``weights``.
    """
    chosen: list[tuple[Candidate, float]] = []
    if not weak_passages(passages, abstain_below):
        if found is None:
            found = candidates(query or question, passages, embedder)
        chosen = choose(found, weights=weights)
        if chosen and min_score is not None and chosen[0][1] < min_score:
            chosen = []
    quotes = [to_quote(c, score, query or question) for c, score in chosen]
    cited: dict[int, Citation] = {}
    for c, _ in chosen:
        cited.setdefault(c.passage.n, c.passage)
    text = " ".join(f"{' '.join(q.text.split())} [{q.n}]" for q in quotes)
    return Answer(
        question=question,
        answer=text or abstain_phrase,
        citations=list(cited.values()),
        passages=list(passages),
        abstained=not quotes,
        model=model,
        mode="extract",
        quotes=quotes,
    )


def to_quote(
    c: Candidate,
    score: float,
    question: str | None = None,
    min_question_words: int | None = MIN_QUESTION_WORDS,
) -> Quote:
    """The quote of a chosen sentence: with ``question``, the part of it that answers
    (:func:`rag.spans.answer_span`), else the whole sentence."""
    p, s = c.passage, c.sentence
    a, b = (0, len(s.text))
    if question is not None:
        a, b = answer_span(terms(question), s.text, min_question_words)
    start, end = s.start + a, s.start + b
    return Quote(
        n=p.n,
        text=s.text[a:b],
        source=p.source,
        page=p.page,
        start=start,
        end=end,
        doc_start=p.start + start,
        doc_end=p.start + end,
        score=round(score, 4),
    )


def _quotable(s: Sentence) -> bool:
    return s.words >= MIN_WORDS and not s.text.endswith(":")


def lexical_scores(question: str, texts: Sequence[str]) -> list[float]:
    """The idf-weighted share of the question's terms each text holds, 0 to 1."""
    q = terms(question)
    if not q:
        return [0.0] * len(texts)
    sets = [terms(t) for t in texts]
    df = Counter(t for s in sets for t in s if t in q)
    n = len(texts)
    idf = {t: math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in q}
    total = sum(idf.values())
    return [sum(idf[t] for t in q & s) / total for s in sets]
