"""Plain text and markdown files: decoding, and markdown headings for section metadata."""

from __future__ import annotations

import re
from pathlib import Path

from ingest.loaders.document import LoadedFile, LoadError, Page, normalise

# CommonMark ATX headings and code fences, matched one line at a time (up to 3 spaces indent).
_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_RE = re.compile(r"(?:^|[ \t]+)#+$")  # "## Title ##"; the '#' of "C#" is text
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def load_text_document(source: str, text: str, title: str | None = None) -> LoadedFile:
    """A text that is not a file (a dataset record), loaded like a plain text file."""
    text = normalise(text)
    if not text.strip():
        raise LoadError("no text")
    return LoadedFile(path=Path(source), kind="text", pages=[Page(text=text)], title=title)


def decode_text(data: bytes) -> str:
    """The text of ``data`` (UTF-8, UTF-16 with a BOM, or Latin-1); :class:`LoadError` if binary."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LoadError("binary content, not text (contains NUL bytes)")
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-16" and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            break
        return text
    # Text that is mostly printable in Latin-1 is kept; anything else is binary.
    text = data.decode("latin-1")
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text[:8192])
    if printable < 0.95 * min(len(text), 8192):
        raise LoadError("binary content, not text (not valid UTF-8)")
    return text


def load_text(path: Path, data: bytes, kind: str) -> LoadedFile:
    """A text (``kind="text"``) or markdown (``kind="markdown"``) file as one page."""
    text = normalise(decode_text(data))
    if not text.strip():
        raise LoadError("no text (the file holds only whitespace)")
    headings = _markdown_headings(text) if kind == "markdown" else []
    title = headings[0][1] if headings else None
    return LoadedFile(path=path, kind=kind, pages=[Page(text=text, headings=headings)], title=title)


def _markdown_headings(text: str) -> list[tuple[int, str]]:
    """ATX headings outside fenced code blocks, as (offset of the heading's line, text)."""
    out: list[tuple[int, str]] = []
    fence: str | None = None  # the opening fence while inside a fenced block
    offset = 0
    for line in text.split("\n"):
        m = _FENCE_RE.match(line)
        if fence is None:
            # An info string after a backtick fence may not hold a backtick.
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = m.group(1)
            elif h := _HEADING_RE.match(line):
                title = _CLOSING_RE.sub("", h.group(2) or "").strip()
                if title:
                    out.append((offset, title))
        elif (
            m
            and m.group(1)[0] == fence[0]
            and len(m.group(1)) >= len(fence)
            and not m.group(2).strip()
        ):
            # Only a fence of the same character, at least as long, with nothing after it closes.
            fence = None
        offset += len(line) + 1
    return out
