"""Ending a streamed answer where the model starts repeating itself, without holding tokens back.

Small models (and large ones at temperature 0) sometimes loop on one sentence until max_tokens.
:class:`RepetitionGuard` passes text through as it arrives and holds back only a sentence in
progress that could still turn out to be a repeat (its start matches a sentence already written).
When it completes as a repeat, the answer ends before it; otherwise it is released. So streaming
stays token by token, and the streamed text is exactly the final answer.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split())


class RepetitionGuard:
    """Feed streamed text with :meth:`feed`; show what it returns; call :meth:`finish` at the end.

    >>> g = RepetitionGuard()
    >>> [g.feed(p) for p in ["It is 4096", " tokens. It is", " 4096 tokens. More"]] + [g.finish()]
    ['It is 4096', ' tokens. ', '', '']
    >>> g.done, g.text
    (True, 'It is 4096 tokens.')
    """

    def __init__(self) -> None:
        self._text = ""
        self._released = 0  # characters of _text already returned
        self._sentence_start = 0  # where the sentence in progress begins
        self._end: int | None = None  # where the answer was cut, once a repeat is found
        self._seen: set[str] = set()

    @property
    def done(self) -> bool:
        """True once a repeated sentence ended the answer: stop generating."""
        return self._end is not None

    @property
    def text(self) -> str:
        """The answer as released so far (after :meth:`finish`: the whole answer)."""
        return self._text[: self._released].rstrip() if self.done else self._text[: self._released]

    def feed(self, piece: str) -> str:
        """Add generated text; return the text that can be shown now."""
        if self.done:
            return ""
        self._text += piece
        for m in _SENTENCE_END.finditer(self._text, self._sentence_start):
            key = _key(self._text[self._sentence_start : m.start()])
            if key and key in self._seen:
                self._end = max(self._sentence_start, self._released)
                return self._release(self._end, final=True)
            if key:
                self._seen.add(key)
            self._sentence_start = m.end()
        partial = _key(self._text[self._sentence_start :])
        if partial and any(s.startswith(partial) for s in self._seen):
            return self._release(self._sentence_start)
        return self._release(len(self._text))

    def finish(self) -> str:
        """The text still held back at the end of the stream (empty if it was a repeat)."""
        if self.done:
            return ""
        rest = _key(self._text[self._sentence_start :])
        if rest and rest in self._seen:
            self._end = max(self._sentence_start, self._released)
            return self._release(self._end, final=True)
        return self._release(len(self._text))

    def _release(self, upto: int, final: bool = False) -> str:
        upto = max(upto, self._released)
        out = self._text[self._released : upto]
        self._released = upto
        return out.rstrip() if final else out
