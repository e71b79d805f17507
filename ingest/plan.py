"""Reading candidates under the size and time limits, and planning a sync against the index:
what is new, changed, unchanged, moved (same content hash) or gone. ``--dry-run`` stops here."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.report import (
    IngestPlan,
    IngestReport,
    Rename,
    SkippedFile,
    TextDocument,
)
from rag.config import Settings
from rag.errors import IndexNotFound
from rag.index.docstore import DocumentRecord
from rag.index.reader import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(int(settings.max_file_mb * MB), settings.file_timeout)


MB = 1024 * 1024


def find_vanished(docs: Sequence[DocumentRecord], scope: Sequence[Path]) -> list[DocumentRecord]:
    """Documents under ``scope`` (folders, or files named) whose file no longer exists."""
    out = []
    for d in docs:
        path = Path(d.source)
        in_scope = any(path == s or s in path.parents for s in scope)
        if in_scope and path.is_absolute() and not path.exists():
            out.append(d)
    return out


def by_sha(docs: Sequence[DocumentRecord]) -> dict[str, list[DocumentRecord]]:
    out: dict[str, list[DocumentRecord]] = {}
    for d in docs:
        out.setdefault(d.sha256, []).append(d)
    return out


def plan_sync(
    candidates: Sequence[Path | TextDocument],
    skipped: list[SkippedFile],
    index_dir: Path,
    settings: Settings,
    scope: list[Path] | None,
) -> IngestReport:
    """A dry run: hash the files and compare them with the index, without loading any model."""
    started = time.perf_counter()
    report = IngestReport(index=str(index_dir), files_skipped=skipped, dry_run=True)
    plan = report.plan = IngestPlan()
    try:
        with Store.open(index_dir) as store:
            docs = store.documents()
            report.documents_total, report.chunks_total = store.counts()
    except IndexNotFound:
        docs = []
    by_source = {d.source: d for d in docs}
    vanished = find_vanished(docs, scope) if scope is not None else []
    renames = by_sha(vanished)
    limits = Limits.of(settings)
    claimed: set[int] = set()
    for candidate in candidates:
        source = source_of(candidate)
        data, reason = read_candidate(candidate, limits)
        if data is None:
            report.files_skipped.append(SkippedFile(path=source, reason=reason or ""))
            continue
        sha = hashlib.sha256(data).hexdigest()
        rec = by_source.get(source)
        if rec is not None:
            (plan.unchanged if rec.sha256 == sha else plan.updated).append(source)
        elif renames.get(sha):
            old = renames[sha].pop(0)
            claimed.add(old.id)
            plan.renamed.append(Rename(source=old.source, target=source))
        else:
            plan.added.append(source)
    plan.deleted = [d.source for d in vanished if d.id not in claimed]
    report.added, report.updated = len(plan.added), len(plan.updated)
    report.unchanged, report.renamed = len(plan.unchanged), len(plan.renamed)
    report.deleted = len(plan.deleted)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def read_candidate(
    candidate: Path | TextDocument, limits: Limits
) -> tuple[bytes | None, str | None]:
    """The bytes of a candidate, or None and why it is skipped."""
    if isinstance(candidate, TextDocument):
        return candidate.text.encode("utf-8"), None
    try:
        size = candidate.stat().st_size
        if size > limits.max_bytes:
            return None, (
                f"too large ({size / MB:.1f} MB; the limit is {limits.max_bytes / MB:g} MB, "
                "setting max_file_mb)"
            )
        return candidate.read_bytes(), None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"


def source_of(candidate: Path | TextDocument) -> str:
    return candidate.source if isinstance(candidate, TextDocument) else str(candidate)
