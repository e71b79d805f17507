"""Loaders: one file in, its pages (PDF) or its whole text (text, markdown) out, with metadata.

A file that cannot be read raises :class:`LoadError` with a reason meant for the user; the pipeline
reports it and moves on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PDF_SUFFIXES = frozenset({".pdf"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
DOCX_SUFFIXES = frozenset({".docx"})
SUPPORTED_SUFFIXES = (
    PDF_SUFFIXES | TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | DOCX_SUFFIXES
)

# CommonMark ATX headings and code fences, matched one line at a time (up to 3 spaces indent).
_HEADING_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_RE = re.compile(r"(?:^|[ \t]+)#+$")  # "## Title ##"; the '#' of "C#" is text
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


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
        return _load_pdf(path, data, time_limit)
    if kind in ("text", "markdown"):
        return _load_text(path, data, kind)
    if kind in ("html", "docx"):
        return _load_markup(path, data, kind)
    raise LoadError(f"unsupported file type {path.suffix or '(none)'}")


def _load_markup(path: Path, data: bytes, kind: str) -> LoadedFile:
    from ingest.markup import MarkupError, docx_to_text, html_to_text

    try:
        if kind == "html":
            text, headings, title = html_to_text(_decode_text(data))
        else:
            text, headings, title = docx_to_text(data)
    except MarkupError as exc:
        raise LoadError(str(exc)) from exc
    text = _normalise(text)
    if not text.strip():
        raise LoadError("no text")
    title = title or (headings[0][1] if headings else None)
    return LoadedFile(path=path, kind=kind, pages=[Page(text=text, headings=headings)], title=title)


def load_text_document(source: str, text: str, title: str | None = None) -> LoadedFile:
    """A text that is not a file (a dataset record), loaded like a plain text file."""
    text = _normalise(text)
    if not text.strip():
        raise LoadError("no text")
    return LoadedFile(path=Path(source), kind="text", pages=[Page(text=text)], title=title)


def _decode_text(data: bytes) -> str:
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


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_text(path: Path, data: bytes, kind: str) -> LoadedFile:
    text = _normalise(_decode_text(data))
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


def timeout_reason(time_limit: float) -> str:
    return f"took longer than the {time_limit:g} s limit (setting file_timeout)"


def _load_pdf(path: Path, data: bytes, time_limit: float | None = None) -> LoadedFile:
    import io
    import time

    started = time.monotonic()

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    if not data.lstrip()[:1024].startswith(b"%PDF") and b"%PDF" not in data[:1024]:
        raise LoadError("not a PDF (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Many PDFs are encrypted with an empty user password and open without one.
            try:
                ok = reader.decrypt("")
            except Exception as exc:
                raise LoadError(f"encrypted PDF that cannot be opened ({exc})") from exc
            if not ok:
                raise LoadError("encrypted PDF: a password is required")
        n_pages = len(reader.pages)
    except LoadError:
        raise
    except FileNotDecryptedError as exc:
        raise LoadError("encrypted PDF: a password is required") from exc
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"corrupt or truncated PDF ({exc})") from exc
    except Exception as exc:
        raise LoadError(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if n_pages == 0:
        raise LoadError("PDF has no pages")
    try:
        labels: list[str] | None = list(reader.page_labels)
    except Exception:
        labels = None
    pages: list[Page] = []
    without_text = 0
    failures = 0
    for i in range(n_pages):
        # Between pages: a page that hangs inside pypdf is not interrupted.
        if i and time_limit is not None and time.monotonic() - started > time_limit:
            raise LoadError(f"{timeout_reason(time_limit)}; stopped at page {i + 1} of {n_pages}")
        try:
            page = reader.pages[i]
            # A page without fonts cannot carry a text layer; skip its (slow) content parsing.
            text = (page.extract_text() or "") if _has_fonts(page) else ""
        except Exception as exc:
            log.warning("%s: page %d could not be read: %s", path, i + 1, exc)
            failures += 1
            text = ""
        # Glyphs without a Unicode mapping (small caps, ligatures) come out as NUL characters.
        text = _normalise(text).replace("\x00", "")
        if not text.strip():
            without_text += 1
            continue
        label = labels[i] if labels and i < len(labels) else None
        pages.append(Page(text=text, number=i + 1, label=label))
    if not pages:
        if failures == n_pages:
            raise LoadError("corrupt PDF: no page could be read")
        raise LoadError(
            f"no text layer on any of its {n_pages} pages (a scan or printed outlines); "
            "it needs OCR before it can be ingested",
            pages_without_text=without_text,
        )
    title = None
    try:
        meta = reader.metadata
        title = str(meta.title) if meta and meta.title else None
    except Exception:
        title = None
    return LoadedFile(
        path=path, kind="pdf", pages=pages, title=title, pages_without_text=without_text
    )


def _has_fonts(page: Any) -> bool:
    """Whether a PDF page, or any form XObject it draws, declares a font."""
    try:
        resources = page.get("/Resources")
        return _resources_have_fonts(resources, depth=0)
    except Exception:
        return True  # unsure: let text extraction decide


def _resources_have_fonts(resources: Any, depth: int) -> bool:
    if resources is None or depth > 8:
        return depth > 8
    resources = getattr(resources, "get_object", lambda: resources)()
    if not hasattr(resources, "get"):
        return False
    fonts = resources.get("/Font")
    if fonts is not None and len(getattr(fonts, "get_object", lambda: fonts)()) > 0:
        return True
    xobjects = resources.get("/XObject")
    if xobjects is None:
        return False
    xobjects = xobjects.get_object()
    for ref in xobjects.values():
        xobj = ref.get_object()
        if xobj.get("/Subtype") == "/Form" and _resources_have_fonts(
            xobj.get("/Resources"), depth + 1
        ):
            return True
    return False
