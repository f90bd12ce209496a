"""The HTTP API of the core (stdlib ThreadingHTTPServer on 127.0.0.1, JSON bodies)."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from . import metrics
from .core import Core
from .errors import BadRequest, NotFound, SimcoreError
from .fsutil import atomic_write_text

Handler = Callable[[Core, dict[str, Any], re.Match[str]], Any]


def _req(body: dict[str, Any], key: str, typ: type | tuple[type, ...] = str) -> Any:
    if key not in body or not isinstance(body[key], typ):
        raise BadRequest(f"field {key!r} is required ({typ})")
    return body[key]


def _num(body: dict[str, Any], key: str) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest(f"field {key!r} must be a number")
    return float(v)


def _order(core: Core, _b: dict[str, Any], m: re.Match[str]) -> Any:
    cid = unquote(m.group(1))
    found = core.find_order(cid)
    if not found["found"]:
        raise NotFound(f"no order with client_order_id {cid!r}")
    return found


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", r"/health", lambda c, b, m: {"ok": True, "safety_mode": c.status()["safety_mode"]}),
    ("GET", r"/state", lambda c, b, m: c.status()),
    ("GET", r"/positions", lambda c, b, m: c.positions()),
    ("GET", r"/orders", lambda c, b, m: {"orders": c.open_orders()}),
    ("GET", r"/orders/by-client-id/([^/]+)", _order),
    ("POST", r"/safety-mode", lambda c, b, m: c.set_safety_mode(
        _req(b, "mode"), _req(b, "reason_code"), str(b.get("reason_message", "")),
        str(b.get("actor", "http")), bool(b.get("allow_non_halt", False)))),
    ("POST", r"/orders/cancel-all", lambda c, b, m: c.cancel_all_orders(
        b.get("client_token"), str(b.get("actor", "http")))),
    ("POST", r"/orders/reduce-only", lambda c, b, m: c.reduce_only_order(
        _req(b, "symbol"), _req(b, "side"), _num(b, "notional"), _req(b, "client_order_id"),
        _num(b, "qty"), bool(b.get("risk_off", False)), str(b.get("actor", "http")))),
    ("POST", r"/reconcile", lambda c, b, m: c.reconcile(bool(b.get("adopt", False)),
                                                          str(b.get("actor", "http")))),
    ("POST", r"/kill-switch", lambda c, b, m: c.kill_switch(
        _req(b, "engage", bool), str(b.get("reason", "")), str(b.get("actor", "http")))),
    ("POST", r"/tick", lambda c, b, m: c.tick(int(b.get("n", 1)))),
]


def make_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one core directory."""

    class _H(BaseHTTPRequestHandler):
        server_version = "simcore/0.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, (json.dumps(obj, sort_keys=True) + "\n").encode(), "application/json")

        def _dispatch(self, method: str) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                core = Core(root)
                if method == "GET" and path == "/metrics":
                    text = metrics.render(core.status())
                    self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
                    return
                body: dict[str, Any] = {}
                if method in ("POST", "PUT"):
                    raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    try:
                        body = json.loads(raw or b"{}")
                    except ValueError as exc:
                        raise BadRequest(f"body is not JSON: {exc}") from exc
                    if not isinstance(body, dict):
                        raise BadRequest("body must be a JSON object")
                for meth, pattern, fn in ROUTES:
                    m = re.fullmatch(pattern, path)
                    if m and meth == method:
                        self._json(200, fn(core, body, m))
                        return
                if any(re.fullmatch(p, path) for _m, p, _f in ROUTES):
                    self._json(405, {"error": f"method {method} not allowed on {path}"})
                else:
                    self._json(404, {"error": f"no route {method} {path}"})
            except SimcoreError as exc:
                self._json(exc.http_status, {"error": str(exc), "type": type(exc).__name__})
            except Exception as exc:  # a bug: report it as 500, keep serving
                self._json(500, {"error": f"internal error: {exc!r}", "type": "InternalError"})

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch("PUT")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

    return _H


def serve(root: Path, port: int = 0, port_file: Path | None = None,
          announce: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM/SIGINT; announces and optionally writes the bound port."""
    Core(root)  # fail fast when the directory is not a core
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(root))
    httpd.daemon_threads = True
    bound = httpd.server_address[1]
    if port_file:
        atomic_write_text(port_file, f"{bound}\n")
    announce(f"listening on http://127.0.0.1:{bound}")

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
