"""Parse the passage numbers an answer cites; attribute answers that cite none."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.index.lexical import STOPWORDS

_MARK_RE = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
_MARK_WS_RE = re.compile(r"([ \t]*)" + _MARK_RE.pattern)
_WORD_RE = re.compile(r"[^\W_]{3,}", re.UNICODE)


def cited_numbers(text: str) -> list[int]:
    """Passage numbers cited as [n], [n, m] or [n][m], in order of first mention."""
    seen: list[int] = []
    for m in _MARK_RE.finditer(text):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if n not in seen:
                seen.append(n)
    return seen


def strip_invalid(text: str, valid: set[int]) -> str:
    """Remove citation marks, or the numbers in them, that name no passage of the prompt."""

    def fix(m: re.Match[str]) -> str:
        nums = [p.strip() for p in re.split(r"[,;]", m.group(2))]
        keep = [p for p in nums if int(p) in valid]
        return f"{m.group(1)}[{', '.join(keep)}]" if keep else ""

    return _MARK_WS_RE.sub(fix, text).strip()


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD_RE.findall(text)} - STOPWORDS


def attribute(answer: str, passages: Sequence[str], min_support: float = 0.3) -> list[int]:
    """1-based numbers of the passages that best support ``answer`` by content-word overlap.

    Used when a model cites nothing: the passage sharing the largest share of the answer's content
    words is cited, and any other within 80% of it; none when no passage reaches ``min_support``.
    """
    words = content_words(answer)
    if not words or not passages:
        return []
    support = [len(words & content_words(p)) / len(words) for p in passages]
    best = max(support)
    if best < min_support:
        return []
    return [i + 1 for i, s in enumerate(support) if s >= 0.8 * best]


def is_abstention(answer: str, phrase: str) -> bool:
    """Whether the model gave the abstention phrase (or an unmistakable variant of it)."""
    norm = re.sub(r"[^a-z ]", "", answer.lower().replace("’", "'").replace("'", ""))
    target = re.sub(r"[^a-z ]", "", phrase.lower().replace("'", ""))
    if target and target in norm:
        return True
    starts = (
        "i dont know",
        "i do not know",
        "the provided documents do not",
        "the passages do not",
    )
    return norm.strip().startswith(starts)
