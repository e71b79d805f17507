"""PDF files: one :class:`Page` per physical page that has a text layer, read with pypdf."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ingest.loaders.document import LoadedFile, LoadError, Page, normalise

log = logging.getLogger(__name__)


def timeout_reason(time_limit: float) -> str:
    return f"took longer than the {time_limit:g} s limit (setting file_timeout)"


def load_pdf(path: Path, data: bytes, time_limit: float | None = None) -> LoadedFile:
    """The pages of a PDF; :class:`LoadError` if it is unreadable, encrypted, a scan or too slow."""
    import io
    import time

    started = time.monotonic()

    # pypdf is imported here so that importing the loaders stays cheap.
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
        text = normalise(text).replace("\x00", "")
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
