"""What an ingest reports: files added, updated, renamed, deleted and skipped (with reasons), and
the inputs it takes besides paths (in-memory text documents, a progress callback)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


class SkippedFile(BaseModel):
    path: str
    reason: str


class Rename(BaseModel):
    source: str = Field(description="The old path, which no longer exists.")
    target: str


class IngestPlan(BaseModel):
    """The changes a run would make, file by file; what ``--dry-run`` reports.

    Files are not parsed in a dry run, so a file listed as added may still turn out unreadable.
    """

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    renamed: list[Rename] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


class IngestReport(BaseModel):
    """What one ingest run did; the CLI prints it as JSON with ``--json``."""

    index: str
    files_ingested: int = Field(0, description="Files added or updated by this run.")
    files_skipped: list[SkippedFile] = Field(default_factory=list)
    added: int = Field(0, description="New files.")
    updated: int = Field(0, description="Files whose content changed; their old chunks replaced.")
    unchanged: int = Field(0, description="Files already in the index with the same content.")
    deleted: int = Field(0, description="Documents removed because their file is gone (sync).")
    renamed: int = Field(
        0, description="Moved files recognised by content; their chunks kept, not re-embedded."
    )
    pages: int = Field(0, description="Pages (PDF) or files (text) with text, in ingested files.")
    pages_without_text: int = Field(
        0, description="PDF pages with no text layer (need OCR), in ingested and skipped files."
    )
    chars: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0
    warnings: list[str] = Field(
        default_factory=list,
        description="What failed after the commit was published (a merge, a clean-up), with the "
        "command that finishes it; the files listed above are in the index all the same.",
    )
    dry_run: bool = False
    plan: IngestPlan | None = Field(None, description="What would change (dry runs only).")


@dataclass
class FileProgress:
    """Passed to the progress callback once per file handled."""

    done: int
    total: int
    path: str
    status: str  # "added", "updated", "renamed", "unchanged" or "skipped"
    pages: int
    chunks: int


# Called after each file with the running counts (the CLI draws its progress bar from it).
ProgressCallback = Callable[[FileProgress], None]


@dataclass(frozen=True)
class TextDocument:
    """A text to ingest that is not a file; ``source`` names it in the index and in citations."""

    source: str
    text: str
    title: str | None = None


def nothing_message(report: IngestReport) -> str:
    if not report.files_skipped:
        return (
            "No supported files found (PDF, DOCX, HTML, .txt, .md). Name files or folders that hold them: "
            "rag ingest PATH... --index DIR"
        )
    lines = "; ".join(f"{s.path}: {s.reason}" for s in report.files_skipped[:10])
    more = len(report.files_skipped) - 10
    tail = f" (and {more} more)" if more > 0 else ""
    return f"Nothing could be ingested. Skipped: {lines}{tail}"
