"""Ending a streamed answer where the model starts repeating itself, without holding tokens back.

Small models (and large ones at temperature 0) sometimes loop on one sentence until max_tokens.
:class:`RepetitionGuard` passes text through as it arrives and holds back only a sentence in
progress that could still turn out to be a repeat (its start matches a sentence already written).
When it completes as a repeat, the answer ends before it; otherwise it is released. So streaming
stays token by token, and the streamed text is exactly the final answer.

It also ends an answer at a stop string (where a small model runs on into an invented next turn),
holding back only text that could still be the start of one. Every backend trims through it: the
server's streams (:mod:`rag.llm.server_chat`) and the embedded model's (:func:`guard_stream`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence

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

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._text = ""
        self._released = 0  # characters of _text already returned
        self._sentence_start = 0  # where the sentence in progress begins
        self._end: int | None = None  # where the answer was cut, once a repeat is found
        self._seen: set[str] = set()

    @property
    def done(self) -> bool:
        """True once a repeated sentence or a stop string ended the answer: stop generating."""
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
        stopped = self._cut_at_stop()
        for m in _SENTENCE_END.finditer(self._text, self._sentence_start):
            key = _key(self._text[self._sentence_start : m.start()])
            if key and key in self._seen:
                self._end = max(self._sentence_start, self._released)
                return self._release(self._end, final=True)
            if key:
                self._seen.add(key)
            self._sentence_start = m.end()
        if stopped:
            return self._close(stopped=True)
        upto = self._stop_prefix_start()
        partial = _key(self._text[self._sentence_start :])
        if partial and any(s.startswith(partial) for s in self._seen):
            upto = min(upto, self._sentence_start)
        return self._release(upto)

    def finish(self) -> str:
        """The text still held back at the end of the stream (empty if it was a repeat)."""
        if self.done:
            return ""
        return self._close(stopped=False)

    def _close(self, stopped: bool) -> str:
        rest = _key(self._text[self._sentence_start :])
        if rest and rest in self._seen:
            self._end = max(self._sentence_start, self._released)
            return self._release(self._end, final=True)
        if stopped:
            self._end = len(self._text)
            return self._release(self._end, final=True)
        return self._release(len(self._text))

    def _cut_at_stop(self) -> bool:
        """Drop everything from the first stop string on; whether there was one.

        Released text never holds the start of a stop string (see :meth:`_stop_prefix_start`), so
        the search starts where the released text ends.
        """
        found = [i for s in self._stop if (i := self._text.find(s, self._released)) >= 0]
        if not found:
            return False
        cut = min(found)
        self._text = self._text[:cut]
        # A separator before the stop string may already have ended a sentence past the cut.
        self._sentence_start = min(self._sentence_start, cut)
        return True

    def _stop_prefix_start(self) -> int:
        """Where the longest tail of the text that could still grow into a stop string begins
        (the text's length when there is none): nothing from there on is released yet."""
        longest = max((len(s) for s in self._stop), default=0)
        for i in range(max(self._released, len(self._text) - longest + 1), len(self._text)):
            tail = self._text[i:]
            if any(s.startswith(tail) for s in self._stop):
                return i
        return len(self._text)

    def _release(self, upto: int, final: bool = False) -> str:
        upto = max(upto, self._released)
        out = self._text[self._released : upto]
        self._released = upto
        return out.rstrip() if final else out


def guard_stream(
    pieces: Iterable[str], stop: Sequence[str] = (), halt: threading.Event | None = None
) -> Iterator[str]:
    """Pass generated ``pieces`` through a :class:`RepetitionGuard` with ``stop`` strings; once
    the answer has ended, set ``halt`` (the generator stops spending time on it) and stop reading.
    """
    guard = RepetitionGuard(stop)
    for piece in pieces:
        if out := guard.feed(piece):
            yield out
        if guard.done:
            if halt is not None:
                halt.set()
            return
    if tail := guard.finish():
        yield tail


__all__ = ["RepetitionGuard", "guard_stream"]
