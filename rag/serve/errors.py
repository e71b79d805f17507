"""HTTP errors: the status of each library error, and OpenAI's error body.

Every error answers ``{"error": {"message", "type", "code"}}``, the shape OpenAI's clients read,
with a message that names the fix as the library's messages do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rag.errors import (
    ConfigError,
    IndexCorrupt,
    IndexLocked,
    IndexMismatch,
    IndexNotFound,
    LLMUnavailable,
    ModelUnavailable,
    NothingIngested,
    PromptTooLong,
    RagError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports as ``status`` with ``message``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


# Library errors, most specific first: (class, HTTP status, OpenAI error type).
_STATUS: tuple[tuple[type[RagError], int, str], ...] = (
    (ConfigError, 400, "invalid_request_error"),
    (PromptTooLong, 400, "invalid_request_error"),
    (NothingIngested, 422, "invalid_request_error"),
    (IndexLocked, 409, "conflict"),
    (IndexNotFound, 503, "server_error"),
    (IndexMismatch, 503, "server_error"),
    (IndexCorrupt, 503, "server_error"),
    (LLMUnavailable, 503, "server_error"),
    (ModelUnavailable, 503, "server_error"),
)


# What a client is told instead of the library's message, which names server paths, addresses
# or process ids; the message itself goes to the server's log under the request id.
_PUBLIC = {
    IndexLocked: "The index is being written by another process; try again when it has finished.",
    IndexNotFound: "The index cannot be read right now.",
    IndexMismatch: "The index cannot be read right now.",
    IndexCorrupt: "The index cannot be read right now.",
    LLMUnavailable: "The answering model is unavailable right now.",
    ModelUnavailable: "A model the server needs could not be loaded.",
}


def from_library(exc: RagError, request_id: str = "", scrub: Scrubber | None = None) -> ApiError:
    """The error a client sees for a library error: its status, and either the library's message
    (a 4xx about the request, with server paths removed) or a fixed one (the server's own state:
    the details are logged under ``request_id``)."""
    status, kind = 500, "server_error"
    for cls, code, name in _STATUS:
        if isinstance(exc, cls):
            status, kind = code, name
            break
    public = next((m for cls, m in _PUBLIC.items() if isinstance(exc, cls)), None)
    if public is None and status >= 500:
        public = "The server could not answer."
    if public is not None:
        log.warning("request %s: %s: %s", request_id or "-", type(exc).__name__, exc)
        return ApiError(status, with_request_id(public, request_id), kind)
    message = str(exc)
    return ApiError(status, scrub(message) if scrub is not None else message, kind)


def unexpected(exc: BaseException, request_id: str) -> ApiError:
    """A 500 for an exception no handler expected: nothing of it reaches the client."""
    log.error("request %s failed", request_id or "-", exc_info=exc)
    return ApiError(
        500, with_request_id("The server failed to answer.", request_id), "server_error"
    )


def with_request_id(message: str, request_id: str) -> str:
    if not request_id:
        return message
    return f"{message} (request id {request_id}; the server's log has the details)"


class Scrubber:
    """Removes the server's own directories from a message: a file under the upload directory is
    named by its name, the index by its directory's name, the home directory as ``~``."""

    def __init__(self, uploads: Path, index_dir: Path) -> None:
        index = index_dir.expanduser().resolve()
        self._pairs = [
            (str(uploads) + os.sep, ""),
            (str(index), index.name),
            (str(index_dir), index.name),
            (str(Path.home()), "~"),
        ]

    def __call__(self, message: str) -> str:
        for root, replacement in self._pairs:
            if root not in ("", os.sep):
                message = message.replace(root, replacement)
        return message


def body(status: int, message: str, kind: str, request_id: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind, "code": status}
    if request_id:
        error["request_id"] = request_id
    return {"error": error}
