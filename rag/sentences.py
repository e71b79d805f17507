"""Sentences of a passage with their exact character spans, robust to text extracted from PDFs.

Extractive answers quote sentences verbatim, so a sentence is always ``text[start:end]`` of the
passage it came from. PDF text breaks lines inside sentences, keeps headings on lines of their
own, lists items after bullets and is full of abbreviations ("et al.", "Fig.", "e.g.") and
numbers ("3.5", "p < 0.05"); a period followed by a capital letter is not enough to end a
sentence, and a line break is not enough either.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

# Words that end with a period without ending the sentence (compared lower-cased, period removed).
ABBREVIATIONS = frozenset(
    """
    al approx art c ca cf ch co corp dept dr e.g eq eqs est etc et fig figs g i.e inc jr ltd
    mr mrs ms p pp prof ref refs resp sec sect sr st suppl tab vol vols vs viz
    jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()  # noqa: SIM905  (a word list reads better as words)
)
# Abbreviations that often end a sentence too: before a capitalised word they do ("... by Zhu et
# al. Purification was ..."); before "(2019)", "[12]" or a lower-case word they do not.
FINAL_ABBREVIATIONS = frozenset({"al", "etc"})
# Abbreviations only before a number ("No. 5"); otherwise ordinary words ("said no.").
NUMBER_ABBREVIATIONS = frozenset({"no", "nos"})
# A sentence end: terminal punctuation, closing quotes or brackets, then whitespace and a
# character that can open a sentence.
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[A-Z0-9\u2022])")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_BULLET = re.compile(r"\n(?=[ \t]*(?:[-*\u2022\u25aa\u25cf\u25e6\u2023\u2013]|\d{1,2}[.)])\s)")
_LINE = re.compile(r"\n")
_WORD = re.compile(r"[A-Za-z]{2,}")
# A line this short that ends without punctuation, followed by a capitalised line, is a heading
# ("3.2 Attention"); wrapped lines of body text are longer.
HEADING_CHARS = 60
# Longer "sentences" are tables, reference lists or tables of contents: cut them at line breaks.
MAX_SENTENCE_CHARS = 600


@dataclass(frozen=True)
class Sentence:
    """``text`` is exactly ``passage[start:end]``."""

    start: int
    end: int
    text: str

    @property
    def words(self) -> int:
        return len(_WORD.findall(self.text))


def split_sentences(text: str) -> list[Sentence]:
    """The sentences of ``text`` in order, each stripped of surrounding whitespace."""
    cuts = sorted(_boundaries(text) | {0, len(text)})
    sentences: list[Sentence] = []
    for a, b in itertools.pairwise(cuts):
        for start, end in _long_pieces(text, a, b):
            start, end = _strip(text, start, end)
            if end > start:
                sentences.append(Sentence(start, end, text[start:end]))
    return sentences


def _boundaries(text: str) -> set[int]:
    cuts: set[int] = set()
    for m in _END.finditer(text):
        if not _is_abbreviation(text, m.start()):
            cuts.add(m.end())
    for pattern in (_PARAGRAPH, _BULLET):
        cuts.update(m.start() for m in pattern.finditer(text))
    for m in _LINE.finditer(text):
        if _ends_heading(text, m.start()):
            cuts.add(m.start())
    return cuts


def _is_abbreviation(text: str, period: int) -> bool:
    """Whether the word before the period at ``period`` is an abbreviation or an initial."""
    if text[period] != ".":
        return False
    start = period
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([\"'":
        start -= 1
    word = text[start:period].lower()
    if not word:
        return False
    if word in FINAL_ABBREVIATIONS:
        return re.match(r"\s+[A-Z]", text[period + 1 : period + 4]) is None
    if word in ABBREVIATIONS:
        return True
    if word in NUMBER_ABBREVIATIONS:
        return re.match(r"[ \t]+\d", text[period + 1 : period + 4]) is not None
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith", "A. thaliana"
        return True
    # Dotted abbreviations: "e.g", "i.e", "U.S", "a.m".
    return bool(re.fullmatch(r"(?:[a-z]\.)+[a-z]", word))


def _ends_heading(text: str, newline: int) -> bool:
    line_start = text.rfind("\n", 0, newline) + 1
    line = text[line_start:newline].strip()
    if not line or len(line) > HEADING_CHARS or line[-1] in ".!?:;,-([":
        return False
    rest = text[newline + 1 : newline + 3].lstrip()
    return bool(rest) and (rest[0].isupper() or rest[0].isdigit())


def _long_pieces(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """[a, b), cut at line breaks into pieces of at most about MAX_SENTENCE_CHARS when longer."""
    if b - a <= MAX_SENTENCE_CHARS:
        return [(a, b)]
    pieces: list[tuple[int, int]] = []
    start = a
    for m in _LINE.finditer(text, a, b):
        if m.start() - start >= MAX_SENTENCE_CHARS // 2:
            pieces.append((start, m.start()))
            start = m.start()
    pieces.append((start, b))
    return pieces


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
