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

Words are Unicode's in every script, lower-cased as lexical search lower-cases them (a Greek
final sigma stays ς). Chinese and Japanese are written without spaces, so their content words
(:func:`terms`) are the overlapping pairs of characters of each Han or kana run (a lone character
is its own term), as CJK search engines index them: most Chinese words are one or two characters
long, so a pair that two texts share is most often a word they share. When trimming, each CJK
character is a word of its own that restates the question when a pair of the question holds it,
and it counts half a question word (a pair is about one word); the particles in CJK_STOPWORDS go
with a run as English stopwords do. The stopwords are lexical search's
(:data:`rag.index.lexical.STOPWORDS`), so a word that search ignores in a question is no content
word here either; stemming drops an English plural 's' and leaves other scripts alone (inflected
forms of Russian or Greek words do not meet).
"""

from __future__ import annotations

import re

from rag.index.lexical import STOPWORDS
from rag.sentences import CJK

# Chinese particles and Japanese case markers that a run restating the question may take with it,
# as it takes English stopwords: "的" (of), "是"/"为" (is), "在" (at), "和" (and), "は", "の".
# Only characters that are almost never part of a content word at a sentence's edge.
CJK_STOPWORDS = frozenset("的了是为在和与及或也都被吗呢吧はのがを")
# A run at an edge is left out when it holds at least this many of the question's content words;
# chosen on the tune half of COVID-QA (benchmarks/results/extract_calibration.json).
MIN_QUESTION_WORDS = 2

# Content words: runs of letters and digits of spaced scripts, and CJK runs (cut into pairs).
_PART = re.compile(rf"[^\W_{CJK}]+")
_TERM = re.compile(rf"{_PART.pattern}|([{CJK}]+)")
# A word as a reader sees it: "SARS-CoV-2", "0.2", "95%", "Zhu's" are one word each, and so is
# each character of a CJK run.
_W = rf"[^\W{CJK}]"
_WORD = re.compile(rf"[{CJK}]|{_W}+(?:[-'\u2019./]{_W}+)*%?")
_CJK_CHAR = re.compile(rf"[{CJK}]")
_OPEN, _CLOSE = "([{\uff08\u3010\u300c\u300e", ")]}\uff09\u3011\u300d\u300f"
_SEPARATORS = ".,;:!?\u3002\uff0c\u3001\uff1b\uff1a\uff01\uff1f" + _OPEN + _CLOSE


def stem(term: str) -> str:
    """A plural 's' dropped, so that 'vaccines' meets 'vaccine'."""
    return term[:-1] if len(term) > 3 and term.endswith("s") and not term.endswith("ss") else term


def terms(text: str) -> set[str]:
    """Content words, lower-cased and stemmed; CJK runs give their pairs of characters."""
    out: set[str] = set()
    for m in _TERM.finditer(text.lower()):
        run = m[1]
        if run is None:
            if m[0] not in STOPWORDS:
                out.add(stem(m[0]))
        elif len(run) == 1:
            out.add(run)
        else:
            out.update(run[i : i + 2] for i in range(len(run) - 1))
    return out


def answer_span(
    question_terms: set[str], text: str, min_question_words: int | None = MIN_QUESTION_WORDS
) -> tuple[int, int]:
    """``(start, end)`` of the part of ``text`` (a sentence) to quote: all of it, less a leading
    and a trailing run of the question's words (``question_terms``, as :func:`terms` gives them)
    and stopwords that holds at least ``min_question_words`` of them. ``None`` keeps it whole."""
    words = list(_WORD.finditer(text))
    if min_question_words is None or not words or not question_terms:
        return 0, len(text)
    kinds = [_kind(text, m, question_terms) for m in words]
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
        # A letter or digit here belongs to the next word: CJK words are not spaced.
        if c.isspace() or c in _SEPARATORS or c.isalnum():
            break
        at += step
    return at


def _kind(text: str, word: re.Match[str], question_terms: set[str]) -> tuple[str, float]:
    """The word's kind ("stop", "question" or "other") and how many question words it holds."""
    w = word[0].lower()
    if _CJK_CHAR.fullmatch(w):
        at = word.start()
        pairs = (text[max(at - 1, 0) : at + 1], text[at : at + 2])
        if w in question_terms or any(p in question_terms for p in pairs if len(p) == 2):
            return "question", 0.5
        return ("stop" if w in CJK_STOPWORDS else "other"), 0.0
    parts = _PART.findall(w)
    if parts and all(p in STOPWORDS for p in parts):
        return "stop", 0.0
    return ("question", 1.0) if any(stem(p) in question_terms for p in parts) else ("other", 0.0)


def _run(kinds: list[tuple[str, float]], least: int) -> int:
    """How many leading words to leave out: the run of question words and stopwords, when it
    holds at least ``least`` question words."""
    n = 0
    held = 0.0
    while n < len(kinds) and kinds[n][0] != "other":
        held += kinds[n][1]
        n += 1
    return n if held >= least else 0


def _close_brackets(text: str, start: int, end: int) -> int:
    """``end`` moved past closing brackets that the span opened, so that "(ILI)" keeps its ")"."""
    depth = sum((c in _OPEN) - (c in _CLOSE) for c in text[start:end])
    while depth > 0 and end < len(text) and text[end] in _CLOSE + " ":
        depth -= text[end] in _CLOSE
        end += 1
    return len(text[:end].rstrip())
