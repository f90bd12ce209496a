"""The small urllib client of the HTTP plugins: one request, error statuses as results."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import Any

from engine.errors import PluginError

MAX_BODY = 1 << 20  # bytes of response body kept in the result

URL = {"type": "string", "pattern": "^https?://", "description": "http:// or https:// URL."}
HEADERS = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "Request headers.",
}
TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "description": "Seconds. Default 10."}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def safe_url(url: str) -> str:
    """The URL without user:password@ (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname or ""))


def fetch(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float | None = 10.0,
    follow_redirects: bool = True,
    expect_json: bool | None = None,
) -> dict[str, Any]:
    """Send one request. HTTP error statuses are results; network failures raise PluginError.

    Result: url, status, headers (lower-case names), body (text, capped at 1 MiB),
    truncated, json (parsed when expected or when the content type says JSON, else None),
    ok (200 <= status < 400), elapsed_s.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    handlers = [] if follow_redirects else [_NoRedirect()]
    opener = urllib.request.build_opener(*handlers)
    where = f"{method} {safe_url(url)}"
    start = time.monotonic()
    try:
        try:
            response = opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            response = e
        with response:
            raw = response.read(MAX_BODY + 1)
            status = response.status if response.status is not None else response.code
            resp_headers: Message = response.headers
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            raise PluginError(f"{where}: timed out after {timeout}s") from None
        raise PluginError(f"{where}: {getattr(reason, 'strerror', None) or reason}") from None
    except TimeoutError:
        raise PluginError(f"{where}: timed out after {timeout}s") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise PluginError(f"{where}: {e}") from None
    elapsed = round(time.monotonic() - start, 6)
    text = raw[:MAX_BODY].decode(resp_headers.get_content_charset() or "utf-8", errors="replace")
    result: dict[str, Any] = {
        "url": safe_url(url),
        "status": status,
        "headers": {k.lower(): v for k, v in resp_headers.items()},
        "body": text,
        "truncated": len(raw) > MAX_BODY,
        "json": None,
        "ok": 200 <= status < 400,
        "elapsed_s": elapsed,
    }
    if expect_json is None:
        expect_json = "json" in (resp_headers.get_content_type() or "")
        lenient = True
    else:
        lenient = False
    if expect_json:
        try:
            result["json"] = json.loads(text)
        except json.JSONDecodeError as e:
            if not lenient:
                raise PluginError(
                    f"{where}: response is not JSON: {e.msg} at line {e.lineno} col {e.colno}",
                    result=result,
                ) from None
    return result

