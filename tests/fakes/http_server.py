"""A real HTTP server on a free loopback port, in a thread, that records every request.

Provider fakes (Twilio, FCM, Web Push, webhook receivers) subclass it and answer like the
real service; a test can also queue canned failures (``fail_next``) to act out a bad day.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.services import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    arrived: float

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, payload: Any, **headers: str) -> Response:
        return cls(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
        )


class _IPv6HttpServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class LocalHttpServer:
    """Override ``answer`` to speak a service's API; every request is kept in ``requests``.
    It listens on 127.0.0.1, or on the loopback address given (``"::1"``)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self._failures: list[Response] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def answer(self, request: Request) -> Response:
        return Response(200)

    def fail_next(self, count: int, response: Response) -> None:
        """The next ``count`` requests get ``response`` instead of the service's answer."""
        with self.lock:
            self._failures.extend([response] * count)

    def _respond(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if self._failures:
                return self._failures.pop(0)
        return self.answer(request)

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    arrived=time.time(),
                )
                response = owner._respond(request)
                try:
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (what timeout tests make it do)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server_class = _IPv6HttpServer if ":" in self.host else ThreadingHTTPServer
        self._server = server_class((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self, path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def wait_for(
        self, count: int, path_prefix: str = "", timeout: float = 10
    ) -> list[Request]:
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path_prefix)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.received(path_prefix))} of {count} requests arrived")


@contextmanager
def running(server: LocalHttpServer) -> Iterator[LocalHttpServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
