"""Sentences of a passage with their exact character spans, robust to text extracted from PDFs.

Extractive answers quote sentences verbatim, so a sentence is always ``text[start:end]`` of the
passage it came from. PDF text breaks lines inside sentences, keeps headings on lines of their
own, lists items after bullets and is full of abbreviations ("et al.", "Fig.", "e.g.") and
numbers ("3.5", "p < 0.05"); a period followed by a capital letter is not enough to end a
sentence, and a line break is not enough either.

Letters and case are Unicode's: a sentence may open with "Über", "Её" or "Ωστόσο", and 。！？
end a sentence with no space after them, as Chinese and Japanese are written.

Words (:attr:`Sentence.words`, which extract mode's MIN_WORDS and FULL_WORDS are counted in) are
runs of two or more letters in scripts that put spaces between words. Chinese and Japanese put
none, so a run of Han or kana characters counts one word per two characters, rounded up: a word
of segmented Chinese text is about 1.5 to 1.7 characters long on average, so thresholds
calibrated in English words mean about the same length of sentence in either script (the 4-word
minimum is 7 or 8 characters). Hangul is written with spaces and counts as letters; so do Thai
and Lao, which are not (a Thai sentence counts few words).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

# Han ideographs (with 々 and 〇), hiragana and katakana, whole and half-width: the scripts written
# without spaces between words. Hangul is left out: Korean puts spaces between words.
CJK = (
    "\u3005\u3007\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9d\U00020000-\U0003134f"
)
# A letter of a script written with spaces: any Unicode letter but a CJK one.
LETTER = rf"[^\W\d_{CJK}]"

# Words that end with a period without ending the sentence (compared lower-cased, period removed);
# a few of German ("vgl.", "bzw.") and Russian ("см.", "рис.") too, since a capital of any script
# now opens a sentence.
ABBREVIATIONS = frozenset(
    """
    al approx art c ca cf ch co corp dept dr e.g eq eqs est etc et fig figs g i.e inc jr ltd
    mr mrs ms p pp prof ref refs resp sec sect sr st suppl tab vol vols vs viz
    jan feb mar apr jun jul aug sep sept oct nov dec
    abb bzw vgl напр рис см табл
    """.split()  # noqa: SIM905  (a word list reads better as words)
)
# Abbreviations that often end a sentence too: before a capitalised word they do ("... by Zhu et
# al. Purification was ..."); before "(2019)", "[12]" or a lower-case word they do not.
FINAL_ABBREVIATIONS = frozenset({"al", "etc", "usw", "т.д", "т.п"})
# Abbreviations only before a number ("No. 5"); otherwise ordinary words ("said no.").
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "nr"})
# Closing quotes and brackets that may follow terminal punctuation, in Latin, Cyrillic, Greek and
# CJK typography (German quotes close with « as often as with »).
_CLOSING = "\"'\u201d\u2019\u00bb\u00ab\u203a\u2039)\\]\u300d\u300f\u3011\u300b\u3009\uff09"
# Signs other than letters and digits that open a sentence: quotes, brackets, ¿ ¡ and bullets.
_OPENING = "\"'\u201c\u2018\u201e\u00ab\u00bb\u2039\u203a([\u00bf\u00a1\u2022\u300c\u300e\u3010"
# A sentence end: Latin terminal punctuation and closing signs before whitespace (what follows
# must open a sentence: see _opens_sentence), or CJK terminal punctuation, which needs no space.
_END = re.compile(rf"[.!?]+[{_CLOSING}]*(?=\s+(\S))|[\u3002\uff01\uff1f]+[{_CLOSING}]*")
# A blank line, with LF or CRLF line ends.
_PARAGRAPH = re.compile(r"\r?\n[ \t\r]*\n\s*")
_BULLET = re.compile(r"\n(?=[ \t]*(?:[-*\u2022\u25aa\u25cf\u25e6\u2023\u2013]|\d{1,2}[.)])\s)")
_LINE = re.compile(r"\n")
# The words that are counted: letter runs of spaced scripts, and CJK runs (counted by length).
_COUNTED = re.compile(rf"{LETTER}{{2,}}|([{CJK}]+)")
_DOTTED = re.compile(rf"(?:{LETTER}\.)+{LETTER}")
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
        return count_words(self.text)


def count_words(text: str) -> int:
    """Words as the module docstring counts them: letter runs, and CJK runs by their length."""
    return sum(math.ceil(len(m[1]) / 2) if m[1] else 1 for m in _COUNTED.finditer(text))


def split_sentences(text: str) -> list[Sentence]:
    """The sentences of ``text`` in order, each stripped of surrounding whitespace."""
    cuts = sorted(_boundaries(text) | {0, len(text)})
    sentences: list[Sentence] = []
    for a, b in itertools.pairwise(cuts):
        for start, end in _long_pieces(text, a, b):
            start, end = strip_span(text, start, end)
            if end > start:
                sentences.append(Sentence(start, end, text[start:end]))
    return sentences


def _boundaries(text: str) -> set[int]:
    cuts: set[int] = set()
    for m in _END.finditer(text):
        follows = m[1]
        if follows is not None and not _opens_sentence(follows):
            continue
        if not _is_abbreviation(text, m.start()):
            cuts.add(m.end())
    for pattern in (_PARAGRAPH, _BULLET):
        cuts.update(m.start() for m in pattern.finditer(text))
    for m in _LINE.finditer(text):
        if _ends_heading(text, m.start()):
            cuts.add(m.start())
    return cuts


def _opens_sentence(c: str) -> bool:
    """Whether a sentence may begin with ``c``: a capital (a letter of a caseless script too, such
    as Han or Arabic), a digit, or an opening sign."""
    return c in _OPENING or c.isdecimal() or _capital(c)


def _capital(c: str) -> bool:
    return c.isalpha() and not c.islower()


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
        after = re.match(r"\s+(\S)", text[period + 1 : period + 4])
        return after is None or not _capital(after[1])
    if word in ABBREVIATIONS:
        return True
    if word in NUMBER_ABBREVIATIONS:
        return re.match(r"[ \t]+\d", text[period + 1 : period + 4]) is not None
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith", "A. thaliana"
        return True
    # Dotted abbreviations: "e.g", "i.e", "U.S", "a.m", "z.B", "т.е", "π.χ".
    return _DOTTED.fullmatch(word) is not None


def _ends_heading(text: str, newline: int) -> bool:
    line_start = text.rfind("\n", 0, newline) + 1
    line = text[line_start:newline].strip()
    if (
        not line
        or len(line) > HEADING_CHARS
        or line[-1] in ".!?:;,-([\u3002\uff01\uff1f\uff1a\uff1b\uff0c\u3001"
    ):
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


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed to leave out the whitespace at both ends of ``text[start:end]``."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
