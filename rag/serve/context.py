"""What every route reaches through its request: the configuration, the warm index, the uploads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from rag.engine import RAG
from rag.serve.config import DEFAULT_QUEUED_WRITES, ServeConfig
from rag.serve.names import SourceNames
from rag.serve.state import WarmIndex
from rag.serve.uploads import Uploads
from rag.serve.writes import WriteQueue


@dataclass
class Served:
    config: ServeConfig
    index: WarmIndex
    uploads: Uploads
    ingest_workers: int | None = 1
    writes: WriteQueue = field(default_factory=lambda: WriteQueue(DEFAULT_QUEUED_WRITES))
    _names: dict[str, SourceNames] = field(default_factory=dict)

    def names(self, rag: RAG) -> SourceNames:
        """The public document names of ``rag``'s snapshot, made once per snapshot."""
        key = rag.store.snapshot.name
        found = self._names.get(key)
        if found is None:
            docs = (d.source for d in rag.store.documents())
            found = SourceNames(str(self.uploads.directory), docs)
            self._names = {key: found}  # the newest snapshot's only
        return found


async def served(request: Request) -> Served:
    # async: FastAPI would run a plain function in its thread pool, for a lookup.
    found: Served = request.app.state.served
    return found


# What a route declares to receive the served state: ``ctx: Ctx``.
Ctx = Annotated[Served, Depends(served)]
