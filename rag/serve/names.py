"""The names clients see for documents: never a path of the server's file system.

A document's source in the index is the absolute path it was read from. The service names an
upload by its name in the upload directory, and any other document by its path below the
directory all the other documents share (the folder that was ingested: ``rag ingest ~/papers``
gives ``sub/paper.pdf``). Responses are rewritten on the way out (every ``source`` and
``also_in`` value), and ``DELETE /v1/documents/{name}`` takes these names back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any, TypeVar

T = TypeVar("T")


class SourceNames:
    """Public names for the documents of one snapshot."""

    def __init__(self, uploads: str, sources: Iterable[str]) -> None:
        self.uploads = uploads.rstrip(os.sep) + os.sep
        others = [s for s in sources if not s.startswith(self.uploads) and os.path.isabs(s)]
        parents = [os.path.dirname(s) for s in others]
        self.root = os.path.commonpath(parents) if parents else None

    def public(self, source: str) -> str:
        """The name a client sees for ``source``."""
        if source.startswith(self.uploads):
            return source[len(self.uploads) :]
        if self.root is not None and os.path.isabs(source):
            relative = os.path.relpath(source, self.root)
            if not relative.startswith(".."):
                return PurePosixPath(*relative.split(os.sep)).as_posix()
            return os.path.basename(source)
        return source  # an in-memory document's own name

    def rewrite(self, data: T) -> T:
        """``data`` (a response body) with every ``source`` and ``also_in`` named publicly."""
        rewritten: T = self._rewrite(data)
        return rewritten

    def _rewrite(self, data: Any) -> Any:
        if isinstance(data, dict):
            out: dict[Any, Any] = {}
            for key, value in data.items():
                if key == "source" and isinstance(value, str):
                    out[key] = self.public(value)
                elif key == "also_in" and isinstance(value, list):
                    out[key] = [self.public(v) if isinstance(v, str) else v for v in value]
                else:
                    out[key] = self._rewrite(value)
            return out
        if isinstance(data, list):
            return [self._rewrite(v) for v in data]
        return data

    def resolve(self, name: str, known: Iterable[str]) -> str | None:
        """The source a client's ``name`` stands for: a source as stored, an upload's name, or a
        public name that exactly one document has."""
        known = list(known)
        if name in known:
            return name
        for candidate in (self.uploads + name, "/" + name):
            if candidate in known:
                return candidate
        matches = [s for s in known if self.public(s) == name]
        return matches[0] if len(matches) == 1 else None
