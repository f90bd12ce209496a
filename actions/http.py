"""`http.request` action: one HTTP request that changes something (no redirects by default)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import Plan, StepContext
from transports.http import HEADERS, TIMEOUT, URL, fetch, safe_url
from transports.util import effective_timeout


class HttpRequest:
    """Send one HTTP request; `ok` = 2xx/3xx. Error statuses are results, network failures errors."""

    name: ClassVar[str] = "http.request"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["method", "url"],
        "properties": {
            "method": {
                "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                "description": "HTTP method.",
            },
            "url": URL,
            "headers": HEADERS,
            "json": {"description": "Body sent as JSON (sets Content-Type: application/json)."},
            "body": {"type": "string", "description": "Raw body text (UTF-8)."},
            "timeout": TIMEOUT,
            "idempotency_header": {
                "type": "boolean",
                "description": "Send the step's idempotency token as `Idempotency-Key`. Default false.",
            },
            "follow_redirects": {
                "type": "boolean",
                "description": "Follow redirects. Default false.",
            },
        },
        "not": {"required": ["json", "body"]},
    }

    def _request(
        self, params: Mapping[str, Any], ctx: StepContext
    ) -> tuple[dict[str, str], bytes | None]:
        headers = dict(params.get("headers", {}))
        body: bytes | None = None
        if "json" in params:
            body = json.dumps(params["json"], ensure_ascii=False).encode()
            headers.setdefault("Content-Type", "application/json")
        elif "body" in params:
            body = params["body"].encode()
        if params.get("idempotency_header"):
            headers["Idempotency-Key"] = ctx.idempotency_token
        return headers, body

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: url, status, headers, body, truncated, json, ok, elapsed_s."""
        headers, body = self._request(params, ctx)
        return fetch(
            params["method"],
            params["url"],
            headers=headers,
            body=body,
            timeout=effective_timeout(params, ctx, 10.0),
            follow_redirects=params.get("follow_redirects", False),
        )

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Method, URL, headers (credentials as '***') and body."""
        headers, body = self._request(params, ctx)
        url = ctx.redact(safe_url(params["url"]))
        return Plan(
            summary=f"{params['method']} {url}",
            details={
                "method": params["method"],
                "url": url,
                "headers": ctx.redact_headers(headers),
                "body": ctx.redact(body.decode()) if body is not None else None,
            },
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """An HTTP call's effect cannot be observed generically: None."""
        return None
