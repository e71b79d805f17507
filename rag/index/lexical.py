"""Lexical (BM25) search over the SQLite FTS5 index of the document store."""

from __future__ import annotations

import re

# Words too common to help ranking; dropping them keeps OR queries fast on large indexes.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()  # noqa: SIM905
)
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression: the question's distinct content words, OR-ed, each quoted.

    Quoting makes every word a literal term, so punctuation or FTS5 syntax in a question can never
    raise a syntax error. None when the question has no searchable word.
    """
    words: list[str] = []
    for w in _TOKEN_RE.findall(text.lower()):
        if w not in STOPWORDS and w not in words:
            words.append(w)
    if not words:
        words = list(dict.fromkeys(_TOKEN_RE.findall(text.lower())))
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)
