"""The write side: load documents, chunk them by tokens, embed them and commit them to an index."""

from ingest.pipeline import ingest, ingest_documents
from ingest.report import FileProgress, IngestReport, SkippedFile, TextDocument

__all__ = [
    "FileProgress",
    "IngestReport",
    "SkippedFile",
    "TextDocument",
    "ingest",
    "ingest_documents",
]
