"""What every route reaches through its request: the configuration, the warm index, the uploads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from rag.serve.config import ServeConfig
from rag.serve.state import WarmIndex
from rag.serve.uploads import Uploads


@dataclass
class Served:
    config: ServeConfig
    index: WarmIndex
    uploads: Uploads
    ingest_workers: int | None = 1


async def served(request: Request) -> Served:
    # async: FastAPI would run a plain function in its thread pool, for a lookup.
    found: Served = request.app.state.served
    return found


# What a route declares to receive the served state: ``ctx: Ctx``.
Ctx = Annotated[Served, Depends(served)]
