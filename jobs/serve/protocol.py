"""The HTTP/1.1 protocol of `structome serve`: uvicorn's httptools protocol with bounds on what a request may cost
before the application sees it.

uvicorn buffers request headers without limit (one 200 MB header doubled the server's memory) and waits forever for
a request that never ends (slowloris: a header byte every few seconds holds a connection open). Here the headers of
a request may take at most `max_header_bytes` (431 past it) and the whole request, headers and body, at most
`request_timeout_s` from its first byte (408 while the headers are still coming; the connection is closed either
way). A connection that sends nothing is closed after the same time. Responses are not bounded: a slow download
reader is throttled by flow control, not buffered.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEADER_BYTES = 64 << 10  # request line and headers (nginx: 4 x 8 KiB; the server's own headers are < 1 KiB)
REQUEST_TIMEOUT_S = 30.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bound on header bytes and a deadline per request (see the module docstring)."""

    max_header_bytes = MAX_HEADER_BYTES
    request_timeout_s = REQUEST_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._reading_headers = True
        self._deadline: asyncio.TimerHandle | None = None
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_headers and not self.transport.is_closing():  # all of `data` was request line and headers
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"request headers larger than {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes, self._reading_headers = 0, True
        self._arm_deadline()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._past_deadline)

    def _cancel_deadline(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _past_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading_headers:
            self._refuse(408, f"the request did not arrive within {self.request_timeout_s:g} s")
        else:  # the body is late: the application is waiting for it and will see the disconnect
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._reading_headers = False
        self._cancel_deadline()
        body = message.encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()
