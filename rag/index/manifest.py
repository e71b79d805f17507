"""The manifest of a snapshot: how the index was built (provenance), checked on every open.

A snapshot holds three files, named here: the manifest, the FAISS vectors and the SQLite document
store. Opening an index with settings that disagree with its manifest is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

from pydantic import BaseModel, Field

from rag.errors import IndexCorrupt, IndexMismatch

SCHEMA_VERSION = 2  # 2: chunks.heading (document title and section) in the full-text index


INDEX_TYPE = "IndexIDMap2(IndexFlatIP)"


VECTORS = "vectors.faiss"


DOCSTORE = "docstore.sqlite"


MANIFEST = "manifest.json"


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


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("rag-toolkit", "faiss-cpu", "sentence-transformers", "transformers", "pypdf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def read_manifest(snapshot: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((snapshot / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"Cannot read {snapshot / MANIFEST}: {exc}") from exc


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
