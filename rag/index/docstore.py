"""The SQLite rows of an index: schema, rows and the queries the reader, the writer and deletion
share.

Documents and chunks (text, source, page, character span) live in plain tables, one database per
segment (``SEGMENT_SQL``). A snapshot of schema 1-2 holds one database for the whole index (read
by :mod:`rag.index.legacy`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.index.filters import source_glob_sql

# Version 1 stores lack chunks.heading: the conversion to a segment computes it (no heading: NULL,
# as the writer of version 2 stored it).
MIGRATE_1_TO_2 = """
ALTER TABLE chunks ADD COLUMN heading TEXT;
UPDATE chunks SET heading = (
    SELECT NULLIF(TRIM(COALESCE(d.title, '') || ' ' || COALESCE(chunks.section, '')), '')
    FROM documents d WHERE d.id = chunks.doc_id
);
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
"""


# The rows of a segment (schema 3). Schema 1-2 stores had these tables in one file for the whole
# index, plus `meta` and the FTS5 table `chunks_fts` over text and heading kept by triggers; the
# full-text index is now tantivy's (a segment's lexical/ directory) and id counters live in the
# manifest.
SEGMENT_SQL = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    title TEXT,
    added_at TEXT NOT NULL
);
CREATE INDEX documents_sha256 ON documents(sha256);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id),
    seq INTEGER NOT NULL,
    page INTEGER,
    page_label TEXT,
    section TEXT,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT
);
CREATE INDEX chunks_doc ON chunks(doc_id);
"""


@dataclass(frozen=True)
class ChunkRecord:
    """One stored chunk with its provenance."""

    id: int
    source: str
    page: int | None
    page_label: str | None
    section: str | None
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store; ``start``/``end`` are character offsets into its page (or file) text."""

    text: str
    page: int | None
    page_label: str | None
    section: str | None
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class DocumentRecord:
    id: int
    source: str
    sha256: str
    kind: str
    pages: int
    chunks: int


def list_documents(
    db: sqlite3.Connection, where: str | None = None, args: Sequence[Any] = ()
) -> list[DocumentRecord]:
    sql = (
        "SELECT d.id, d.source, d.sha256, d.kind, d.pages, COUNT(c.id) FROM documents d "
        "LEFT JOIN chunks c ON c.doc_id = d.id"
    )
    if where:
        sql += f" WHERE {where}"
    rows = db.execute(sql + " GROUP BY d.id ORDER BY d.source", list(args)).fetchall()
    return [DocumentRecord(*r) for r in rows]


def match_sources(db: sqlite3.Connection, pattern: str) -> list[DocumentRecord]:
    """Documents whose source is ``pattern``, or matches it as a glob.

    As in :meth:`Store.filter_ids`, a glob without a slash also matches file names.
    """
    exact = list_documents(db, "d.source = ?", [pattern])
    if exact:
        return exact
    return list_documents(db, *source_glob_sql(pattern))


def match_patterns(
    db: sqlite3.Connection, patterns: Sequence[str]
) -> tuple[list[DocumentRecord], list[str]]:
    matched: dict[int, DocumentRecord] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        found = match_sources(db, pattern)
        if not found and not any(c in pattern for c in "*?["):
            # A path as typed (relative, ~) is stored absolute and resolved.
            found = match_sources(db, str(Path(pattern).expanduser().resolve()))
        if not found:
            unmatched.append(pattern)
        for d in found:
            matched.setdefault(d.id, d)
    return sorted(matched.values(), key=lambda d: d.source), unmatched


def match_patterns_in(
    stores: Sequence[tuple[sqlite3.Connection, Collection[int]]], patterns: Sequence[str]
) -> tuple[list[DocumentRecord], list[str]]:
    """:func:`match_patterns` over several databases (the segments of an index), each with the
    ids of its deleted documents, which never match."""
    found: dict[int, DocumentRecord] = {}
    matched: set[str] = set()
    for db, deleted in stores:
        for pattern in patterns:
            docs = [d for d in match_patterns(db, [pattern])[0] if d.id not in deleted]
            if docs:
                matched.add(pattern)
            found.update((d.id, d) for d in docs)
    return sorted(found.values(), key=lambda d: d.source), [p for p in patterns if p not in matched]
