"""Uploads and deletions wait their turn on the event loop, not in a worker thread.

The index has one writer at a time anyway. A write that waited for it inside a worker thread
would hold that thread while it waited, and a burst of uploads (60 at once) would take every
thread of the server's pool, so that questions, which run in the same pool, waited behind
them (one retrieval took 11.5 s instead of 0.08 s). Here a write takes a thread only when its
turn comes; at most ``max_waiting`` writes wait, and the next one gets a 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rag.serve.errors import ApiError

RETRY_AFTER_S = 5


class WriteQueue:
    """One write at a time; a bounded number waiting."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.waiting >= self.max_waiting:
            raise ApiError(
                429,
                f"{self.waiting} uploads or deletions are already waiting for the index; send "
                f"this one again in a few seconds (rag serve --max-queued-writes, now "
                f"{self.max_waiting}).",
                "rate_limit_error",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._turn.release()
