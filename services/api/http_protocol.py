"""The API's HTTP/1.1 protocol: uvicorn's on httptools (llhttp, Node's parser, in C),
its request head bounded as uvicorn's pure-Python h11 protocol bounds it.

h11 refuses a head once more than 16 KiB of it waits incomplete; uvicorn's httptools
protocol (and httptools itself, within one header) gathers a head without a bound, so a
client could grow one connection's memory with a head that never ends. Here a head is
refused with a 400, and the connection closed, before the app sees it: once more than
the bound has arrived while it is still incomplete (as h11), and also when its line and
headers, complete, add up to more than the bound (which h11 lets through when they
arrive in one read).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# h11's default for an incomplete event (a request's head), which uvicorn's h11 keeps.
HEAD_LIMIT = 16 * 1024


class HeadTooLarge(Exception):
    """Raised in a parser callback, which httptools answers as a parse error (400)."""


class HttpProtocol(HttpToolsProtocol):
    # Between requests and until a head is complete; the bytes received since the last
    # request ended, and the head's line and headers as parsed.
    _in_head = True
    _received = 0
    _parsed = 0

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            super().data_received(data)
            return
        self._received += len(data)
        super().data_received(data)  # may complete the head, or a request and start one
        if self._in_head and self._received > HEAD_LIMIT and not self.transport.is_closing():
            self.logger.warning("Invalid HTTP request received: its head is over the limit.")
            self.send_400_response("Invalid HTTP request received.")

    def on_url(self, url: bytes) -> None:
        self._parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._parsed > HEAD_LIMIT:
            raise HeadTooLarge(f"a request head over {HEAD_LIMIT} bytes")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received, self._parsed = True, 0, 0
