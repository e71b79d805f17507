"""Token-aware, structure-aware chunking that keeps every chunk's exact character span.

A chunk never exceeds ``chunk_tokens`` tokens of the answering model's tokenizer nor the
embedder's own input limit (which would otherwise truncate it silently). Text is cut at paragraph
and sentence boundaries where possible, at words where a sentence is too long, and at characters
only for unbroken runs (long URLs, CJK text without punctuation). Chunks never cross a page, and
``page_text[chunk.start:chunk.end] == chunk.text`` always holds.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest.loaders import Page
from rag.sentences import strip_span

Counter = Callable[[Sequence[str]], list[int]]

# A piece ends after sentence punctuation (Latin or CJK) followed by space, or at a line break.
_PIECE_RE = re.compile(r"[^\n]*?(?:[.!?;:](?=\s)|[。！？；]|\n|$)", re.DOTALL)
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    page: int | None
    page_label: str | None
    section: str | None
    tokens: int  # in the answering model's tokenizer


@dataclass(frozen=True)
class ChunkLimits:
    chunk_tokens: int
    overlap_tokens: int
    embed_tokens: int  # the embedder's input limit, special tokens excluded


class Chunker:
    """Splits pages into chunks under two token limits: the model's and the embedder's."""

    def __init__(self, limits: ChunkLimits, count_llm: Counter, count_embed: Counter) -> None:
        self.limits = limits
        self._count_llm = count_llm
        self._count_embed = count_embed

    def split(self, page: Page) -> list[Chunk]:
        text = page.text
        pieces = self._pieces(text)
        if not pieces:
            return []
        heading_starts = [h[0] for h in page.headings]
        spans = self._pack(text, pieces, heading_starts)
        spans = self._enforce(text, spans)
        texts = [text[s:e] for s, e in spans]
        counts = self._count_llm(texts)
        out = []
        for (s, e), chunk_text, n in zip(spans, texts, counts, strict=True):
            out.append(
                Chunk(
                    text=chunk_text,
                    start=s,
                    end=e,
                    page=page.number,
                    page_label=page.label,
                    section=_section_at(page.headings, heading_starts, s),
                    tokens=n,
                )
            )
        return out

    # -- pieces: sentences or lines, each within both limits --
    def _pieces(self, text: str) -> list[tuple[int, int]]:
        raw = []
        for m in _PIECE_RE.finditer(text):
            s, e = strip_span(text, m.start(), m.end())
            if s < e:
                raw.append((s, e))
        if not raw:
            return []
        return self._fit(text, raw)

    def _fit(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Split spans over either limit at words, then at characters."""
        llm, emb = self._counts(text, spans)
        out: list[tuple[int, int]] = []
        self._piece_tokens: dict[tuple[int, int], tuple[int, int]] = {}
        for span, a, b in zip(spans, llm, emb, strict=True):
            if a <= self.limits.chunk_tokens and b <= self.limits.embed_tokens:
                out.append(span)
                self._piece_tokens[span] = (a, b)
            else:
                for sub in self._split_long(text, span):
                    out.append(sub)
        missing = [s for s in out if s not in self._piece_tokens]
        if missing:
            for span, a, b in zip(missing, *self._counts(text, missing), strict=True):
                self._piece_tokens[span] = (a, b)
        return out

    def _split_long(self, text: str, span: tuple[int, int]) -> list[tuple[int, int]]:
        s, e = span
        words = [(s + m.start(), s + m.end()) for m in _WORD_RE.finditer(text[s:e])]
        if len(words) > 1:
            # Halve at the middle word boundary until both halves fit.
            mid = len(words) // 2
            left = (words[0][0], words[mid - 1][1])
            right = (words[mid][0], words[-1][1])
            return self._fit_one(text, left) + self._fit_one(text, right)
        if e - s <= 1:
            return [span]
        mid = s + (e - s) // 2
        return self._fit_one(text, (s, mid)) + self._fit_one(text, (mid, e))

    def _fit_one(self, text: str, span: tuple[int, int]) -> list[tuple[int, int]]:
        (a,), (b,) = self._counts(text, [span])
        if a <= self.limits.chunk_tokens and b <= self.limits.embed_tokens:
            self._piece_tokens[span] = (a, b)
            return [span]
        return self._split_long(text, span)

    def _counts(self, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
        texts = [text[s:e] for s, e in spans]
        return self._count_llm(texts), self._count_embed(texts)

    # -- packing pieces into chunks --
    def _pack(
        self, text: str, pieces: list[tuple[int, int]], heading_starts: list[int]
    ) -> list[tuple[int, int]]:
        lim = self.limits
        headings = set(heading_starts)
        chunks: list[tuple[int, int]] = []
        i = 0
        n = len(pieces)
        while i < n:
            j = i
            llm = emb = 0
            while j < n:
                a, b = self._piece_tokens[pieces[j]]
                # +1 per piece: joining text can cost a token at the seam.
                if j > i and (llm + a + 1 > lim.chunk_tokens or emb + b + 1 > lim.embed_tokens):
                    break
                # A heading starts a new chunk once the current one holds a fair amount.
                if j > i and pieces[j][0] in headings and llm >= lim.chunk_tokens // 4:
                    break
                llm += a + 1
                emb += b + 1
                j += 1
            chunks.append((pieces[i][0], pieces[j - 1][1]))
            if j >= n:
                break
            # Overlap: restart at the earliest trailing pieces that fit in the overlap budget and
            # leave room for the next piece; otherwise the next chunk would hold nothing but text
            # that this one already has.
            k = j
            budget = lim.overlap_tokens
            next_llm, next_emb = self._piece_tokens[pieces[j]]
            llm_room = lim.chunk_tokens - (next_llm + 1)
            emb_room = lim.embed_tokens - (next_emb + 1)
            while k - 1 > i and pieces[k][0] not in headings:
                a, b = self._piece_tokens[pieces[k - 1]]
                if a + 1 > min(budget, llm_room) or b + 1 > emb_room:
                    break
                budget -= a + 1
                llm_room -= a + 1
                emb_room -= b + 1
                k -= 1
            if pieces[j][0] in headings:
                k = j  # never carry text from before a heading into its section
            i = k
        return chunks

    def _enforce(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Check each chunk exactly; split any that the per-piece estimate let over a limit."""
        llm, emb = self._counts(text, spans)
        out: list[tuple[int, int]] = []
        prev: tuple[int, int] | None = None
        for span, a, b in zip(spans, llm, emb, strict=True):
            if a <= self.limits.chunk_tokens and b <= self.limits.embed_tokens:
                parts = [span]
            else:
                parts = self._split_long(text, span)
            for part in parts:
                # Splitting a chunk that overlaps the previous one can leave a part that lies
                # wholly inside the previous chunk, whose parts already hold its text.
                if prev is not None and prev[0] <= part[0] and part[1] <= prev[1]:
                    continue
                out.append(part)
            prev = span
        return out


def _section_at(headings: list[tuple[int, str]], starts: list[int], offset: int) -> str | None:
    i = bisect.bisect_right(starts, offset) - 1
    return headings[i][1] if i >= 0 else None
