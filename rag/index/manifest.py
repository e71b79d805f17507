"""The manifest of a snapshot: how the index was built (provenance) and, since schema 3, the
segments that hold its chunks, checked on every open.

A snapshot (``snap-N``) of schema 3 holds only this manifest; the chunks live in immutable
segments (``segments/seg-N``, see :mod:`rag.index.segment`) that it lists with their tombstones.
A snapshot of schema 1 or 2 holds the whole index itself: the manifest, the FAISS vectors and the
SQLite document store (see :mod:`rag.index.legacy`); it is read as it is and converted to a
segment by the next write. Opening an index with settings that disagree with its manifest is
refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from rag.errors import IndexCorrupt, IndexMismatch, IndexNotFound

# 2: chunks.heading (document title and section) in the full-text index.
# 3: segments listed by the manifest, each with its vectors, rows and tantivy postings; deletions
#    as tombstones (deleted document ids per segment).
SCHEMA_VERSION = 3


INDEX_TYPE = "segments"  # schema 3; schema 1-2 indexes say "IndexIDMap2(IndexFlatIP)"


# The files of a schema 1-2 snapshot (read by rag.index.legacy).
VECTORS = "vectors.faiss"
DOCSTORE = "docstore.sqlite"


MANIFEST = "manifest.json"


class VectorIndex(BaseModel):
    """How a segment searches its vectors: ``flat`` (exact) or ``ivf_flat`` (approximate)."""

    kind: Literal["flat", "ivf_flat"] = "flat"
    nlist: int = 0  # inverted lists (ivf_flat)
    nprobe: int = 0  # lists searched without a filter (ivf_flat), chosen by measured recall
    recall_at_10: float | None = None  # measured when built, stored vectors as questions


class SegmentInfo(BaseModel):
    """One segment of a snapshot and what this snapshot deleted from it."""

    name: str
    documents: int  # rows written, tombstoned ones included
    chunks: int
    deleted_documents: list[int] = Field(default_factory=list)  # tombstones: document ids
    deleted_chunks: int = 0
    vectors: VectorIndex = Field(default_factory=VectorIndex)

    @property
    def live_chunks(self) -> int:
        return self.chunks - self.deleted_chunks


class Manifest(BaseModel):
    """Provenance of an index; opening it with incompatible settings is refused."""

    schema_version: int = SCHEMA_VERSION
    embedder: str
    dimension: int
    normalized: bool = True
    tokenizer: str
    chunk_tokens: int
    chunk_overlap: int
    index_type: str = INDEX_TYPE
    documents: int = 0
    chunks: int = 0
    created_at: str = Field(default_factory=lambda: now())
    updated_at: str = Field(default_factory=lambda: now())
    versions: dict[str, str] = Field(default_factory=dict)
    segments: list[SegmentInfo] = Field(default_factory=list)  # schema 3
    next_document_id: int = 1  # ids are never reused, so a tombstone can never hit a new row
    next_chunk_id: int = 1
    # Segment names are never reused either: a reader that read an older manifest must find its
    # segment gone, not another one under the same name. Absent from manifests written before
    # it (older versions ignore it): the segments on disk and in the snapshots set the floor.
    next_segment: int = 1

    @property
    def segmented(self) -> bool:
        return self.schema_version >= 3


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    from importlib import metadata

    out = {}
    for name in ("rag-toolkit", "faiss-cpu", "sentence-transformers", "transformers", "pypdf",
                 "tantivy"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """The versions of the packages that shape an index, read once per process."""
    return dict(_versions())


def read_manifest(snapshot: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((snapshot / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"Cannot read {snapshot / MANIFEST}: {exc}") from exc


def committed_embedder(index_dir: Path) -> str | None:
    """The embedder named by the committed manifest of ``index_dir``; None when there is no index
    there yet or its manifest cannot be read (opening it reports why)."""
    from rag.index.snapshots import current_snapshot

    try:
        return read_manifest(current_snapshot(Path(index_dir))).embedder
    except (IndexCorrupt, IndexNotFound, OSError):
        return None


def check_compatible(manifest: Manifest, *, embedder: str, index_dir: Path) -> None:
    """Refuse to query an index with another embedder than the one that built it."""
    if manifest.schema_version > SCHEMA_VERSION:
        raise IndexMismatch(
            f"{index_dir} was written by a newer version (schema {manifest.schema_version}); "
            "upgrade rag-toolkit."
        )
    if manifest.embedder != embedder:
        raise IndexMismatch(
            f"{index_dir} was built with embedder {manifest.embedder!r}, but the settings name "
            f"{embedder!r}. Query it with --embedder {manifest.embedder} (or RAG_EMBEDDER), "
            "or rebuild it into a new directory with the new embedder."
        )


def check_same_build(existing: Manifest, wanted: Manifest, index_dir: Path) -> None:
    fields = ("embedder", "dimension", "tokenizer", "chunk_tokens", "chunk_overlap")
    diffs = [
        f"{f}: index has {getattr(existing, f)!r}, settings say {getattr(wanted, f)!r}"
        for f in fields
        if getattr(existing, f) != getattr(wanted, f)
    ]
    if diffs:
        raise IndexMismatch(
            f"{index_dir} was built with other parameters ({'; '.join(diffs)}). Use the same "
            "settings to add to it, or ingest into a new --index directory."
        )
