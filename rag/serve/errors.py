"""HTTP errors: the status of each library error, and OpenAI's error body.

Every error answers ``{"error": {"message", "type", "code"}}``, the shape OpenAI's clients read,
with a message that names the fix as the library's messages do.
"""

from __future__ import annotations

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


class ApiError(Exception):
    """An error the API reports as ``status`` with ``message``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


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


def from_library(exc: RagError) -> ApiError:
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return ApiError(status, str(exc), kind)
    return ApiError(500, str(exc), "server_error")


def body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}
