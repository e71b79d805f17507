"""Evaluation indexes, built once through the real ingest pipeline and cached.

The cache key covers everything that changes what the index holds: the data file's bytes, how
the data set is split into documents (``variant``), the embedder, the tokenizer chunks are counted
in and the chunking parameters. Any change gives a new directory, never a stale index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.llm.tokens import tokenizer_name


def eval_index_dir(name: str, data_file: Path, settings: Settings, variant: str = "") -> Path:
    """Where the index of ``data_file`` under these settings is cached."""
    h = hashlib.sha256(Path(data_file).read_bytes())
    h.update(f"|variant={variant}|tokenizer={tokenizer_name(settings)}".encode())
    for key in ("embedder", "chunk_tokens", "chunk_overlap"):
        h.update(f"|{key}={getattr(settings, key)}".encode())
    from rag.retrieval.embeddings import resolve_quantize

    quantize = resolve_quantize(settings)  # "auto" as a new index decides it
    if quantize != "none":  # keyed only when int8, so float keys stay as they were
        h.update(f"|embed_quantize={quantize}".encode())
    return settings.cache_dir / "eval" / f"{name}-{h.hexdigest()[:12]}"


def cached_index(
    index: Path,
    documents: Callable[[], Iterable[Any]],
    settings: Settings,
    progress: Any = None,
) -> Path:
    """``index``, ingested from ``documents()`` (``ingest.TextDocument`` objects) unless it is
    already there; an index written by an older version is brought up to date."""
    from ingest import ingest_documents
    from rag.index.snapshots import CURRENT

    if (index / CURRENT).exists():
        _upgrade(index)
    else:
        ingest_documents(documents(), index, settings, progress=progress)
    return index


def _upgrade(index: Path) -> None:
    """Bring an index written by an older version up to date (a cheap, atomic rewrite)."""
    from rag.index.manifest import SCHEMA_VERSION, read_manifest
    from rag.index.snapshots import current_snapshot
    from rag.index.writer import open_writer

    manifest = read_manifest(current_snapshot(index))
    if manifest.schema_version < SCHEMA_VERSION:
        with open_writer(index, manifest) as writer:
            writer.commit()
