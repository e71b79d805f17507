"""The API key and the size limits, checked before a request reaches a route.

A plain ASGI middleware, outside FastAPI, so that a refused request costs no parsing: a missing or
wrong key is a 401 before the body is read, and a body over its limit is a 413, from its
Content-Length when it has one, else as soon as the bytes read pass the limit. Nothing a route
started is sent after that, and an upload refused this way has not reached the index.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rag.serve.config import MB, Limits
from rag.serve.errors import body
from rag.serve.origins import CSRF_HEADER, CSRF_MESSAGE, OriginPolicy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths that answer without the key: the health check, and the page's own files, which hold no
# data (the page asks for the key and sends it with every API call).
OPEN_PATHS = frozenset({"/healthz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/page/",)
UPLOAD_PATH = "/v1/documents"


class _TooLarge(Exception):
    pass


class Guard:
    """Checks the ``Host`` header, the bearer key (when one is set), the ``Origin`` of requests
    that change something (:mod:`rag.serve.origins`) and the body size of every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        limits: Limits,
        origins: OriginPolicy | None = None,
    ) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limits = limits
        self.origins = origins or OriginPolicy(keyless=self.key is None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope.get("headers") or [])
        # Every answer carries an id; an error's details are logged under it, not sent.
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        send = _with_request_id(send, request_id)
        method: str = scope.get("method", "GET")
        host = _header(headers, b"host")
        refused = self.origins.host_problem(host)
        if refused is not None:
            await _reply(send, 403, refused, "permission_error")
            return
        if self.key is not None and not _open(path) and not self._authorized(headers):
            await _reply(
                send,
                401,
                "Missing or wrong API key: send the server's RAG_API_KEY as "
                "'Authorization: Bearer <key>'.",
                "authentication_error",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        refused = self.origins.origin_problem(method, host, _header(headers, b"origin"))
        missing_header = CSRF_HEADER.encode() not in headers
        if refused is None and missing_header and self.origins.needs_csrf_header(method, path):
            refused = CSRF_MESSAGE
        if refused is not None:
            await _reply(send, 403, refused, "permission_error")
            return
        limit, what = self._limit(scope)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, _too_large(what, limit), "request_too_large")
            return
        seen = 0
        tripped = False
        started = False

        async def counted() -> Message:
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    tripped = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if tripped:
                return  # what a route answered to a cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            pass
        except Exception:
            if not tripped:
                raise
        if tripped and not started:
            await _reply(send, 413, _too_large(what, limit), "request_too_large")

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.key is not None
        value = headers.get(b"authorization", b"")
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["path"] == UPLOAD_PATH and scope["method"] == "POST":
            return self.limits.max_upload_bytes, "An upload (all its files together)"
        return self.limits.max_body_bytes, "A request body"


def _with_request_id(send: Send, request_id: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", request_id.encode()),
            ]
        await send(message)

    return sending


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _too_large(what: str, limit: int) -> str:
    flag = "--max-upload-mb" if what.startswith("An upload") else "--max-body-mb"
    return f"{what} may hold at most {limit / MB:g} MB; this one is larger (rag serve {flag})."


async def _reply(
    send: Send,
    status: int,
    message: str,
    kind: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body(status, message, kind)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
