"""The part of a quoted sentence that answers: the sentence less the words that restate the question.

A sentence that answers a question usually repeats it before (or after) the answer: "All sampling
procedures were performed by veterinarians, ..." answers "Who performed the sampling
procedures?". The run of words at either edge of the sentence that holds only the question's
content words and stopwords, when it holds at least ``min_question_words`` of them, is left out of
the quote; what remains is still one exact substring of the sentence, so the quote stays verbatim
and its character span exact.

Only the edges are trimmed: cutting a sentence at clauses or at a run of question words inside it
was measured too (benchmarks/calibrate_extract.py) and lost more quotes that hold the answer than
it gained in token F1.
"""

from __future__ import annotations

import re

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself me more most
    my no nor not of off on once only or other our out over own same she should so some such
    than that the their them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your
    """.split()  # noqa: SIM905  (a word list reads better as words)
)
# A run at an edge is left out when it holds at least this many of the question's content words;
# chosen on the tune half of COVID-QA (benchmarks/results/extract_calibration.json).
MIN_QUESTION_WORDS = 2

_TERM = re.compile(r"[a-z0-9]+")
# A word as a reader sees it: "SARS-CoV-2", "0.2", "95%", "Zhu's" are one word each.
_WORD = re.compile(r"\w+(?:[-'\u2019./]\w+)*%?")
_OPEN, _CLOSE = "([{", ")]}"
_SEPARATORS = ".,;:!?" + _OPEN + _CLOSE


def stem(term: str) -> str:
    """A plural 's' dropped, so that 'vaccines' meets 'vaccine'."""
    return term[:-1] if len(term) > 3 and term.endswith("s") and not term.endswith("ss") else term


def terms(text: str) -> set[str]:
    """Content words, lower-cased and stemmed."""
    return {stem(t) for t in _TERM.findall(text.lower()) if t not in STOPWORDS}


def answer_span(
    question_terms: set[str], text: str, min_question_words: int | None = MIN_QUESTION_WORDS
) -> tuple[int, int]:
    """``(start, end)`` of the part of ``text`` (a sentence) to quote: all of it, less a leading
    and a trailing run of the question's words (``question_terms``, as :func:`terms` gives them)
    and stopwords that holds at least ``min_question_words`` of them. ``None`` keeps it whole."""
    words = list(_WORD.finditer(text))
    if min_question_words is None or not words or not question_terms:
        return 0, len(text)
    kinds = [_kind(m.group(), question_terms) for m in words]
    i = _run(kinds, min_question_words)
    j = len(words) - _run(kinds[::-1], min_question_words)
    if i >= j:  # the sentence only restates the question: quote it whole
        return 0, len(text)
    start = 0 if i == 0 else _attached(text, words[i].start(), -1)
    end = len(text) if j == len(words) else _attached(text, words[j - 1].end(), 1)
    return start, _close_brackets(text, start, end)


def _attached(text: str, at: int, step: int) -> int:
    """``at`` moved over the signs that cling to a word ("$11", "~5", "bends up''"), not over
    punctuation that separates ("," ";") or brackets (those are closed by ``_close_brackets``)."""
    while at > 0 if step < 0 else at < len(text):
        c = text[at - 1] if step < 0 else text[at]
        if c.isspace() or c in _SEPARATORS:
            break
        at += step
    return at


def _kind(word: str, question_terms: set[str]) -> str:
    parts = _TERM.findall(word.lower())
    if parts and all(p in STOPWORDS for p in parts):
        return "stop"
    return "question" if any(stem(p) in question_terms for p in parts) else "other"


def _run(kinds: list[str], least: int) -> int:
    """How many leading words to leave out: the run of question words and stopwords, when it
    holds at least ``least`` question words."""
    n = held = 0
    while n < len(kinds) and kinds[n] != "other":
        held += kinds[n] == "question"
        n += 1
    return n if held >= least else 0


def _close_brackets(text: str, start: int, end: int) -> int:
    """``end`` moved past closing brackets that the span opened, so that "(ILI)" keeps its ")"."""
    depth = sum((c in _OPEN) - (c in _CLOSE) for c in text[start:end])
    while depth > 0 and end < len(text) and text[end] in _CLOSE + " ":
        depth -= text[end] in _CLOSE
        end += 1
    return len(text[:end].rstrip())
