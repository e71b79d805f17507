"""uvicorn's HTTP/1.1 protocol with a limit on the time a client takes to send its headers.

uvicorn closes an idle keep-alive connection, but not one whose request headers never finish: a
client that opens connections and sends a few bytes of headers now and then (slowloris) holds
each of them for as long as it likes, and 2,000 such connections were held for 50 s. Here a
connection whose request headers are not complete ``header_timeout`` seconds after it opened,
or after its previous response, is closed with a 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0


def protocol_with_header_timeout(seconds: float) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``uvicorn.run(http=...)``)."""

    class HeaderTimeoutProtocol(_HeaderTimeout):
        header_timeout = seconds

    return HeaderTimeoutProtocol


class _HeaderTimeout(H11Protocol):
    header_timeout = DEFAULT_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in; the body is the route's business

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.our_state is h11.IDLE:
            body = b"The request headers took too long to arrive."
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                b"connection: close\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
        self.transport.close()
