"""What every loader returns: a :class:`LoadedFile` of :class:`Page` objects, or a :class:`LoadError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class LoadError(Exception):
    """A file that is skipped; ``str(exc)`` is the reason shown to the user."""

    def __init__(self, reason: str, pages_without_text: int = 0) -> None:
        super().__init__(reason)
        self.pages_without_text = pages_without_text  # of a PDF skipped as a scan


@dataclass
class Page:
    """Text of one PDF page (``number`` 1-based, physical) or of a whole text file (``None``)."""

    text: str
    number: int | None = None
    label: str | None = None
    # (character offset, heading text) of each markdown heading, in order.
    headings: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class LoadedFile:
    path: Path
    kind: str
    pages: list[Page]
    title: str | None = None
    pages_without_text: int = 0

    @property
    def chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


def normalise(text: str) -> str:
    """Line ends as ``\\n``, so character offsets mean the same whatever the file's origin."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
