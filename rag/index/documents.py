"""Removing documents by path or glob: matched first (read-only), then deleted in one commit."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from rag.index.docstore import DocumentRecord, match_patterns_in
from rag.index.manifest import read_manifest
from rag.index.reader import Store
from rag.index.snapshots import current_snapshot
from rag.index.writer import open_writer


def match_documents(
    index_dir: str | Path, patterns: Sequence[str]
) -> tuple[list[DocumentRecord], list[str], int]:
    """What :func:`delete_documents` would remove now: the matching documents of the committed
    snapshot, the patterns that match nothing, and how many documents the index holds.

    Reads only; takes no lock, so a caller may ask the user before deleting.
    """
    with Store.open(index_dir) as store:
        matched, unmatched = match_patterns_in(
            [(seg.db, seg.deleted) for seg in store.segments], patterns
        )
        return matched, unmatched, store.counts()[0]


def delete_documents(
    index_dir: str | Path, patterns: Sequence[str], only: Collection[str] | None = None
) -> tuple[list[DocumentRecord], list[str]]:
    """Remove the documents whose source is, or matches the glob, one of ``patterns``.

    With ``only``, matching documents whose source is not in it are kept: a caller that showed
    the user what :func:`match_documents` found removes no more than that, even if the index
    changed in between. All removals are published in one atomic commit. Returns the removed
    documents and the patterns that matched nothing.
    """
    index_dir = Path(index_dir)
    manifest = read_manifest(current_snapshot(index_dir))
    with open_writer(index_dir, manifest) as writer:
        found, unmatched = writer.match_patterns(patterns)
        removed = [d for d in found if only is None or d.source in only]
        for d in removed:
            writer.delete_document(d.id)
        if removed:
            writer.commit()
    return removed, unmatched
