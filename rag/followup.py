"""Follow-up questions in extract mode: the conversation carried into retrieval and sentence scores.

Generate mode has a served model rewrite a follow-up into a standalone question
(:class:`rag.chat.Chat`); extract mode calls no model, and a follow-up such as "How many heads does
it use?" names nothing to look up. So every question after the first is read with the question
before it (and with those before that while each refers back to its predecessor):

- retrieval searches for the earlier question(s) and the follow-up together, which finds the
  passages of the conversation's topic;
- each sentence's cosine is the better of its cosine to the follow-up alone and to the
  conversation, since an answer may match either reading;
- the word-overlap share counts the follow-up's own content words only: the answering sentence
  seldom repeats the earlier question, and the sentences that do are mostly the earlier answer,
  which the joined text quoted again;
- "how many" and "how much" are the form of the question, not its topic (in a follow-up of three
  content words "many" held a third of the share, and "too many heads" outscored "h = 8 ...
  heads"); a "how many N" follow-up instead credits sentences that hold N and a count.

Reading only the follow-ups that refer back ("it", "its", "these", "And ...") answered fewer:
many refer back with a definite noun ("the big models", "the second contract"), and a question
that changes topic lost nothing when read with the conversation, since the better of the two
cosines and its own words still decide. A first question is answered as before. Each choice was
measured against the follow-up alone and against the joined text (the previous behaviour) on
written follow-up pairs, tuned on one half and reported on the other
(benchmarks/followups.py, benchmarks/README.md "Follow-up questions in extract mode").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rag.answer import Citation
from rag.extract import DEFAULT_WEIGHTS, Candidate, Weights, candidates, lexical_scores
from rag.spans import STOPWORDS, stem, terms

# Earlier questions a follow-up is read with: enough for a follow-up of a follow-up, few enough
# that a long conversation does not drown the latest question.
MAX_EARLIER = 3
# Weight of the count signal of "how many N" follow-ups (extract.Weights.numeric), chosen on the
# tune half of benchmarks/data/followups.json; the other weights are extract mode's own.
COUNT_WEIGHT = 0.15
WEIGHTS: Weights = replace(DEFAULT_WEIGHTS, numeric=COUNT_WEIGHT)

# Words that point back to something named earlier, and openings that continue a question: an
# earlier question that has them is read with the one before it.
_REFERS_BACK = re.compile(
    r"\b(?:it|its|itself|they|them|their|theirs|themselves|this|that|these|those|he|him|his|"
    r"she|her|one|ones|such|former|latter)\b|^\W*(?:and|also|but|or|so|then|what about|how about)\b",
    re.IGNORECASE,
)
_QUANTITY_FORM = re.compile(r"\bhow\s+(?:many|much)\b", re.IGNORECASE)
_HOW_MANY = re.compile(r"\bhow\s+many\s+(.*)", re.IGNORECASE)
_TERM = re.compile(r"[a-z0-9]+")
# A count: a whole number (not a decimal such as 0.9, which measures rather than counts) or a
# number word.
_COUNT = re.compile(
    r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+|\d+)(?!\.\d|\d)|\b(?:one|two|three|four|five|six|seven|"
    r"eight|nine|ten|eleven|twelve|dozen|hundred|thousand|million|billion)\b",
    re.IGNORECASE,
)


def depends(message: str) -> bool:
    """Whether ``message`` refers back to something named earlier ("it", "these") or continues
    the previous question ("And on English-to-French?")."""
    return _REFERS_BACK.search(message) is not None


def earlier_questions(history: Sequence[tuple[str, str]]) -> list[str]:
    """The earlier questions of ``history`` ((question, answer) turns) that the next question is
    read with, oldest first: the previous question, and before it those up to the last question
    that did not refer back, at most :data:`MAX_EARLIER`."""
    found: list[str] = []
    for question, _ in reversed(history):
        found.insert(0, question.strip())
        if len(found) == MAX_EARLIER or not depends(question):
            break
    return found


def conversation(message: str, history: Sequence[tuple[str, str]]) -> str | None:
    """What retrieval searches for when ``message`` follows the turns of ``history``: the
    earlier questions and ``message`` joined; None for a first question."""
    earlier = earlier_questions(history)
    return " ".join([*earlier, message.strip()]) if earlier else None


def counted_noun(question: str) -> str | None:
    """The thing a "how many" question counts, as :func:`rag.spans.terms` spells it ("how many
    word pieces does it read" -> "piece"), or None."""
    m = _HOW_MANY.search(question)
    if m is None:
        return None
    run: list[str] = []
    for word in _TERM.findall(m.group(1).lower()):
        if word in STOPWORDS:
            break
        run.append(word)
    return stem(run[-1]) if run else None


def candidates_for(
    message: str, joined: str, passages: Sequence[Citation], embedder: Any
) -> list[Candidate]:
    """The sentences of ``passages`` with the signals of a follow-up ``message`` read in its
    conversation ``joined`` (see the module's docstring); score them with :data:`WEIGHTS`."""
    once = _EmbedOnce(embedder)
    alone = candidates(message, passages, once)
    read = candidates(joined, passages, once)
    lexical = lexical_scores(_QUANTITY_FORM.sub("how", message), [c.sentence.text for c in alone])
    noun = counted_noun(message)
    return [
        replace(
            a,
            cosine=max(a.cosine, b.cosine),
            context=max(a.context, b.context),
            lexical=x,
            numeric=float(
                noun is not None
                and noun in terms(a.sentence.text)
                and _COUNT.search(a.sentence.text) is not None
            ),
        )
        for a, b, x in zip(alone, read, lexical, strict=True)
    ]


class _EmbedOnce:
    """The embedder, remembering what it embedded: the two readings of a follow-up are scored
    against the same sentences, which are embedded once."""

    def __init__(self, embedder: Any) -> None:
        self._embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            vectors = np.asarray(self._embedder.embed(new), dtype=np.float32)
            self._vectors.update(zip(new, vectors, strict=True))
        return np.stack([self._vectors[t] for t in texts])
