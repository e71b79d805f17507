"""Which files are ingested: supported types, discovery of files in folders, and dispatch by type.

A new loader is a module beside this one that turns bytes into a
:class:`~ingest.loaders.document.LoadedFile`; it is registered here by its suffixes, its kind in
:func:`kind_of` and its call in :func:`load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ingest.loaders.document import LoadedFile, LoadError
from ingest.loaders.markup import load_markup
from ingest.loaders.pdf import load_pdf
from ingest.loaders.text import load_text

PDF_SUFFIXES = frozenset({".pdf"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
DOCX_SUFFIXES = frozenset({".docx"})
SUPPORTED_SUFFIXES = (
    PDF_SUFFIXES | TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | DOCX_SUFFIXES
)


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return "pdf"
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in DOCX_SUFFIXES:
        return "docx"
    return None


def discover(paths: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """Files to ingest, as ``(path, None)``, or ``(path, reason)`` for named paths to skip.

    Folders are walked recursively in sorted order; hidden files and folders are passed over, and
    so are files of unsupported types found inside folders (a file named explicitly is reported).
    """
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            yield path, "does not exist"
            continue
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if child.is_file() and kind_of(child) is not None:
                    resolved = child.resolve()
                    if resolved not in seen:
                        seen.add(resolved)
                        yield resolved, None
            continue
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        if not path.is_file():
            yield resolved, "not a regular file"
        elif kind_of(path) is None:
            supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
            yield (
                resolved,
                f"unsupported file type {path.suffix or '(none)'} (supported: {supported})",
            )
        else:
            yield resolved, None


def load(path: Path, data: bytes, time_limit: float | None = None) -> LoadedFile:
    """Parse ``data`` (the bytes of ``path``) by the file's type.

    A PDF whose pages take longer than ``time_limit`` seconds in all raises :class:`LoadError`;
    the time is checked between pages.
    """
    kind = kind_of(path)
    if not data:
        raise LoadError("empty file")
    if kind == "pdf":
        return load_pdf(path, data, time_limit)
    if kind in ("text", "markdown"):
        return load_text(path, data, kind)
    if kind in ("html", "docx"):
        return load_markup(path, data, kind)
    raise LoadError(f"unsupported file type {path.suffix or '(none)'}")
