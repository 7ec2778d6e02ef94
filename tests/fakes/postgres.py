"""A PostgreSQL server as its clients see it during crash recovery, on a free loopback port.

It speaks just enough of the wire protocol (v3) to refuse the way a real server does:

- ``recovering``: every connection is refused at startup with the FATAL error a server in
  crash recovery sends, SQLSTATE 57P03 "the database system is in recovery mode";
- ``crashing``: the connection is accepted (authentication, parameters, ready), and the first
  query gets FATAL 57P02 "terminating connection because of crash of another server process",
  what every session receives when a backend crashes and the postmaster restarts.

The shared PostgreSQL server must never be crashed for a test; this stands in for it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Literal

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_PARAMETERS = {
    "server_version": "15.4",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
}
RECOVERING = ("57P03", "the database system is in recovery mode")
CRASHED = ("57P02", "terminating connection because of crash of another server process")


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def error_response(sqlstate: str, text: str) -> bytes:
    fields = (("S", "FATAL"), ("V", "FATAL"), ("C", sqlstate), ("M", text))
    payload = b"".join(k.encode() + v.encode() + b"\0" for k, v in fields) + b"\0"
    return _message(b"E", payload)


def _ready() -> bytes:
    out = _message(b"R", struct.pack("!i", 0))  # AuthenticationOk
    for name, value in _PARAMETERS.items():
        out += _message(b"S", f"{name}\0{value}\0".encode())
    out += _message(b"K", struct.pack("!ii", 1, 1))  # BackendKeyData
    return out + _message(b"Z", b"I")  # ReadyForQuery, idle


class FakePostgres:
    def __init__(self, mode: Literal["recovering", "crashing"]) -> None:
        self.mode = mode
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql://postgres@127.0.0.1:{port}/herald"

    async def __aenter__(self) -> FakePostgres:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:  # SSL and GSSAPI requests are declined; then the startup message
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                (code,) = struct.unpack("!i", (await reader.readexactly(length - 4))[:4])
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
                writer.write(b"N")
            if self.mode == "recovering":
                writer.write(error_response(*RECOVERING))
            else:
                writer.write(_ready())
                await writer.drain()
                await reader.readexactly(5)  # the first message of the first query
                writer.write(error_response(*CRASHED))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
