"""The write side: load documents, chunk them by tokens, embed them and commit them to an index."""

from ingest.pipeline import (
    FileProgress,
    IngestReport,
    SkippedFile,
    TextDocument,
    ingest,
    ingest_documents,
)

__all__ = [
    "FileProgress",
    "IngestReport",
    "SkippedFile",
    "TextDocument",
    "ingest",
    "ingest_documents",
]
