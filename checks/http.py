"""`http.get` check: GET a URL; error statuses are results, connection failures errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext
from transports.http import HEADERS, TIMEOUT, URL, fetch
from transports.util import effective_timeout


class HttpGet:
    """GET a URL; `ok` = 2xx/3xx. Error statuses are results, connection failures are errors."""

    name: ClassVar[str] = "http.get"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": URL,
            "headers": HEADERS,
            "timeout": TIMEOUT,
            "expect_json": {
                "type": "boolean",
                "description": "true: body must be JSON; false: never parse. Default: parse when the "
                "content type says JSON.",
            },
            "follow_redirects": {
                "type": "boolean",
                "description": "Follow redirects. Default true.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: url, status, headers, body, truncated, json, ok, elapsed_s."""
        return fetch(
            "GET",
            params["url"],
            headers=params.get("headers"),
            timeout=effective_timeout(params, ctx, 10.0),
            follow_redirects=params.get("follow_redirects", True),
            expect_json=params.get("expect_json"),
        )
