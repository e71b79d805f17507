"""HTML and DOCX to text with headings, using only the standard library's parsers.

HTML goes through ``html.parser``; a DOCX file is a zip of OOXML parts, read with ``zipfile`` and
``xml.etree``. Both give one text with paragraphs separated by blank lines and the headings (with
their character offsets) that chunking uses as section metadata.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

from ingest.loaders.document import LoadedFile, LoadError, Page, normalise
from ingest.loaders.text import decode_text

_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe"})
_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "header", "footer",
     "pre", "blockquote", "dd", "dt", "figcaption", "main", "nav", "aside", "hr", "form"}
)  # fmt: skip
_HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC = "{http://purl.org/dc/elements/1.1/}"
# Caps on the inflated size of the parts read, so zip bombs are refused instead of inflated. Real
# core.xml files (document properties) are a few KiB.
MAX_DOCX_XML_BYTES = 200 * 1024 * 1024
MAX_DOCX_META_BYTES = 1024 * 1024
_READ_BLOCK = 1024 * 1024


class MarkupError(ValueError):
    """The file cannot be parsed; the message is the reason shown to the user."""


def load_markup(path: Path, data: bytes, kind: str) -> LoadedFile:
    """An HTML (``kind="html"``) or DOCX (``kind="docx"``) file as one page with its headings."""
    try:
        if kind == "html":
            text, headings, title = html_to_text(decode_text(data))
        else:
            text, headings, title = docx_to_text(data)
    except MarkupError as exc:
        raise LoadError(str(exc)) from exc
    text = normalise(text)
    if not text.strip():
        raise LoadError("no text")
    title = title or (headings[0][1] if headings else None)
    return LoadedFile(path=path, kind=kind, pages=[Page(text=text, headings=headings)], title=title)


class _TextBuilder:
    """Accumulates paragraphs and headings with exact offsets into the final text."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.headings: list[tuple[int, str]] = []
        self._length = 0

    def add(self, text: str, heading: bool = False) -> None:
        text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not text:
            return
        if self.paragraphs:
            self._length += 2  # the "\n\n" separator
        if heading:
            self.headings.append((self._length, " ".join(text.split())))
        self.paragraphs.append(text)
        self._length += len(text)

    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _TextBuilder()
        self.title: str | None = None
        self._buf: list[str] = []
        self._skip = 0
        self._in_title = False
        self._heading: str | None = None
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in _HEADING_TAGS or tag in _BLOCK_TAGS:
            self._flush()
        if tag in _HEADING_TAGS:
            self._heading = tag
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in _HEADING_TAGS:
            self._flush(heading=True)
            self._heading = None
        elif tag in _BLOCK_TAGS:
            self._flush()
        if tag == "pre" and self._pre:
            self._pre -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data
            return
        if self._skip:
            return
        self._buf.append(data if self._pre else re.sub(r"\s+", " ", data))

    def _flush(self, heading: bool = False) -> None:
        text = "".join(self._buf)
        self._buf = []
        self.out.add(text, heading=heading and self._heading is not None)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(markup: str) -> tuple[str, list[tuple[int, str]], str | None]:
    """(text, headings, title) of an HTML document."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    title = " ".join(parser.title.split()) if parser.title else None
    return parser.out.text(), parser.out.headings, title or None


def docx_to_text(data: bytes) -> tuple[str, list[tuple[int, str]], str | None]:
    """(text, headings, title) of a DOCX file: paragraphs, tables as rows, Heading/Title styles.

    Every part is read through :func:`_read_part`, which refuses parts that inflate beyond their
    cap (zip bombs), so a hostile file is skipped with a reason instead of filling the memory.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise MarkupError(f"not a DOCX file or corrupt ({exc})") from exc
    with archive:
        try:
            info = archive.getinfo("word/document.xml")
        except KeyError as exc:
            raise MarkupError(f"not a DOCX file or corrupt ({exc})") from exc
        try:
            root = ElementTree.fromstring(_read_part(archive, info, MAX_DOCX_XML_BYTES))
        except ElementTree.ParseError as exc:
            raise MarkupError(f"corrupt DOCX ({exc})") from exc
        title = _docx_title(archive)
    out = _TextBuilder()
    body = root.find(f"{_W}body")
    for block in body if body is not None else []:
        if block.tag == f"{_W}p":
            style = block.find(f"{_W}pPr/{_W}pStyle")
            name = (style.get(f"{_W}val") or "") if style is not None else ""
            heading = name.lower().startswith(("heading", "title"))
            out.add(_paragraph_text(block), heading=heading)
        elif block.tag == f"{_W}tbl":
            for row in block.iter(f"{_W}tr"):
                cells = [
                    " ".join(_paragraph_text(p) for p in cell.iter(f"{_W}p")).strip()
                    for cell in row.iter(f"{_W}tc")
                ]
                out.add(" | ".join(c for c in cells if c))
    return out.text(), out.headings, title


def _read_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """The inflated bytes of one archive member, refused (MarkupError) beyond ``limit`` bytes.

    The size in the zip headers is checked first, then enforced while inflating, because
    headers can lie: memory never holds much more than ``limit`` bytes of a part.
    """
    refused = f"{info.filename} inflates to more than {limit:,} bytes (a zip bomb?); refused"
    if info.file_size > limit:
        raise MarkupError(refused)
    parts: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as fh:
            while piece := fh.read(min(_READ_BLOCK, limit + 1 - size)):
                size += len(piece)
                if size > limit:
                    raise MarkupError(refused)
                parts.append(piece)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
        raise MarkupError(f"corrupt DOCX: cannot read {info.filename} ({exc})") from exc
    return b"".join(parts)


def _paragraph_text(p: ElementTree.Element) -> str:
    parts = []
    for el in p.iter():
        if el.tag == f"{_W}t" and el.text:
            parts.append(el.text)
        elif el.tag == f"{_W}tab":
            parts.append("\t")
        elif el.tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
    return "".join(parts)


def _docx_title(archive: zipfile.ZipFile) -> str | None:
    try:
        info = archive.getinfo("docProps/core.xml")
    except KeyError:
        return None
    # Metadata is optional: an unparsable part only costs the title, but an oversized one is a
    # zip bomb, and _read_part's MarkupError skips the whole file.
    try:
        core = ElementTree.fromstring(_read_part(archive, info, MAX_DOCX_META_BYTES))
    except ElementTree.ParseError:
        return None
    title = core.find(f"{_DC}title")
    return title.text.strip() if title is not None and title.text and title.text.strip() else None
