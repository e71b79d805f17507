"""Loaders: one file in, its pages (PDF) or its whole text (text, markdown, HTML, DOCX) out.

A file that cannot be read raises :class:`LoadError` with a reason meant for the user; the pipeline
reports it and moves on. ``files`` finds files and dispatches them by type to ``pdf``, ``text``
(plain text and markdown) and ``markup`` (HTML and DOCX); ``document`` holds what they return.
"""

from ingest.loaders.document import LoadedFile, LoadError, Page
from ingest.loaders.files import (
    DOCX_SUFFIXES,
    HTML_SUFFIXES,
    MARKDOWN_SUFFIXES,
    PDF_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    discover,
    kind_of,
    load,
)
from ingest.loaders.pdf import timeout_reason
from ingest.loaders.text import load_text_document

__all__ = [
    "DOCX_SUFFIXES",
    "HTML_SUFFIXES",
    "MARKDOWN_SUFFIXES",
    "PDF_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TEXT_SUFFIXES",
    "LoadError",
    "LoadedFile",
    "Page",
    "discover",
    "kind_of",
    "load",
    "load_text_document",
    "timeout_reason",
]
