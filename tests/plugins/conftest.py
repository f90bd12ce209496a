"""Fixtures for the built-in plugin tests: a real StepContext and a real HTTP server."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.plugins import StepContext


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    """A live-mode context whose workdir is the test's tmp_path."""
    return StepContext(run_id="run-1", step_id="step_a", attempt=1, mode="live", workdir=tmp_path)


def _valid(plugin: Any, params: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(plugin.params_schema).is_valid(params)


@pytest.fixture
def valid() -> Callable[[Any, dict[str, Any]], bool]:
    """valid(plugin, params): whether params satisfy the plugin's params_schema, as the engine checks."""
    return _valid


@dataclass
class Server:
    """A running test server: its base URL and the requests it received."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        shift = 3600 if self.path.startswith("/shifted") else 0
        return email.utils.formatdate(time.time() + shift, usegmt=True)

    def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        if self.path == "/json":
            self._reply(200, json.dumps({"status": "up", "n": 3}).encode())
        elif self.path == "/servertime":
            self._reply(200, json.dumps({"serverTime": int(time.time() * 1000)}).encode())
        elif self.path == "/text":
            self._reply(200, "caf\u00e9".encode(), "text/plain; charset=utf-8")
        elif self.path == "/slow":
            time.sleep(2)
            try:
                self._reply(200, b"{}")
            except OSError:  # the client gave up first, as the test intends
                pass
        elif self.path.startswith("/missing"):
            self._reply(404, b'{"error": "no such thing"}')
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/json")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(200, b'{"received": true}')

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


@pytest.fixture
def http_server() -> Iterator[Server]:
    """An HTTP server on 127.0.0.1 in a thread; see _Handler for its routes."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    record = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
