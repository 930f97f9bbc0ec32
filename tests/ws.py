"""graphql-transport-ws clients for tests: the bench's (connect, subscribe, read what
arrives), and one that stalls on purpose."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

from websockets import Subprotocol
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from services.bench.ws import Socket, connect

__all__ = ["Socket", "StalledClient", "connect"]


class StalledClient:
    """A graphql-transport-ws client over a plain blocking socket with a tiny receive
    buffer, that reads nothing until told to: the server meets real back-pressure."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        self.sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        self.sock.settimeout(20)
        url = base_url.replace("http://", "ws://") + "/graphql"
        self.proto = ClientProtocol(
            parse_uri(url), subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        )
        self.proto.send_request(self.proto.connect())
        self._flush()
        while self.proto.state is State.CONNECTING:
            self.proto.receive_data(self.sock.recv(1 << 16))
        assert self.proto.state is State.OPEN, self.proto.handshake_exc
        self._send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        assert self.next_message()["type"] == "connection_ack"

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            self.sock.sendall(chunk)

    def _send(self, message: dict[str, Any]) -> None:
        self.proto.send_text(json.dumps(message).encode())
        self._flush()

    def subscribe(self, query: str, variables: dict[str, Any]) -> None:
        self._send(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    def next_message(self) -> dict[str, Any]:
        """The next text message; ConnectionClosed (with the close frame) at the end."""
        while True:
            for event in self.proto.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    message: dict[str, Any] = json.loads(event.data)
                    return message
            if self.proto.state is State.CLOSED:
                raise self.proto.close_exc
            data = self.sock.recv(1 << 16)
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()
            self._flush()  # pongs and the close handshake

    def close(self) -> None:
        self.sock.close()
