"""The trading-core adapters of the `core.*` plugins: `sim` (in-process simcore), `http`, `freqtrade`.

Chosen in runbook.yaml: `core: {adapter: sim, root: DIR}`, `core: {adapter: http, url: URL}` or
`core: {adapter: freqtrade, url: URL, username_env: VAR, password_env: VAR}` (transports/freqtrade.py);
a step may override with `with: {core_root: DIR}` or `with: {core_url: URL}`. The HTTP contract
is docs/core-http-api.md, so a real trading core can stand behind the same runbooks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from engine.errors import PluginError
from engine.plugins import StepContext
from transports.freqtrade import FreqtradeAdapter
from transports.http import fetch, safe_url

CORE_PARAMS: dict[str, Any] = {
    "core_root": {"type": "string", "description": "sim adapter: the simulated core's directory (overrides runbook.yaml)"},
    "core_url": {"type": "string", "description": "http adapter: base URL of the core's API (overrides runbook.yaml)"},
}


class CoreAdapter(Protocol):
    """The operations runbooks perform on a trading core."""

    def status(self) -> dict[str, Any]: ...
    def positions(self) -> dict[str, Any]: ...
    def open_orders(self) -> list[dict[str, Any]]: ...
    def find_order(self, client_order_id: str) -> dict[str, Any]: ...
    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str, actor: str,
                        allow_non_halt: bool) -> dict[str, Any]: ...
    def cancel_all_orders(self, client_token: str, actor: str) -> dict[str, Any]: ...
    def reduce_only_order(self, order: Mapping[str, Any]) -> dict[str, Any]: ...
    def kill_switch(self, engage: bool, reason: str, actor: str) -> dict[str, Any]: ...
    def explain(self, operation: str, args: Mapping[str, Any]) -> dict[str, Any]: ...


class SimAdapter:
    """Calls simcore.core.Core in-process."""

    def __init__(self, root: Path) -> None:
        from simcore.core import Core  # only the sim adapter needs simcore (and its SQLite world)
        from simcore.errors import SimcoreError

        self._errors = SimcoreError
        try:
            self.core = Core(root)
        except SimcoreError as exc:
            raise PluginError(f"trading core at {root}: {exc}") from None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.core, name)(*args, **kwargs)
        except self._errors as exc:
            raise PluginError(f"core refused {name}: {type(exc).__name__}: {exc}") from None

    def status(self) -> dict[str, Any]:
        return dict(self._call("status"))

    def positions(self) -> dict[str, Any]:
        return dict(self._call("positions"))

    def open_orders(self) -> list[dict[str, Any]]:
        return list(self._call("open_orders"))

    def find_order(self, client_order_id: str) -> dict[str, Any]:
        return dict(self._call("find_order", client_order_id))

    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str, actor: str,
                        allow_non_halt: bool) -> dict[str, Any]:
        return dict(self._call("set_safety_mode", mode, reason_code, reason_message, actor=actor,
                          allow_non_halt=allow_non_halt))

    def cancel_all_orders(self, client_token: str, actor: str) -> dict[str, Any]:
        return dict(self._call("cancel_all_orders", client_token=client_token, actor=actor))

    def reduce_only_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("reduce_only_order", **order))

    def kill_switch(self, engage: bool, reason: str, actor: str) -> dict[str, Any]:
        return dict(self._call("kill_switch", engage, reason, actor=actor))

    def explain(self, operation: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"core": "sim", "call": f"simcore.core.Core.{operation}"}


class HttpAdapter:
    """Speaks the HTTP API of docs/core-http-api.md (through the plugins' one HTTP client)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                 missing: Any = None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        try:
            response = fetch(method, self.url + path, body=data, timeout=self.timeout, expect_json=False,
                             headers={"Content-Type": "application/json", "Accept": "application/json"})
        except PluginError as exc:
            raise PluginError(f"trading core at {safe_url(self.url)} unreachable: {exc}") from None
        status = int(response["status"])
        if status == 404 and missing is not None:
            return missing
        try:
            payload = json.loads(response["body"] or "null")
        except ValueError:
            payload = None
            if status < 400:
                raise PluginError(f"trading core at {safe_url(self.url)}: {method} {path} did not answer JSON") from None
        if status >= 400:
            detail = payload.get("error", f"HTTP {status}") if isinstance(payload, dict) else response["body"][:200]
            raise PluginError(f"core refused {method} {path}: HTTP {status}: {detail}")
        return payload

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET", "/state"))

    def positions(self) -> dict[str, Any]:
        return dict(self._request("GET", "/positions"))

    def open_orders(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/orders").get("orders", []))

    def find_order(self, client_order_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/orders/by-client-id/{quote(client_order_id, safe='')}",
                                  missing={"client_order_id": client_order_id, "found": False, "local": None,
                                           "broker": None, "broker_reachable": True}))

    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str, actor: str,
                        allow_non_halt: bool) -> dict[str, Any]:
        return dict(self._request("POST", "/safety-mode", {"mode": mode, "reason_code": reason_code,
                             "reason_message": reason_message, "actor": actor, "allow_non_halt": allow_non_halt}))

    def cancel_all_orders(self, client_token: str, actor: str) -> dict[str, Any]:
        return dict(self._request("POST", "/orders/cancel-all", {"client_token": client_token, "actor": actor}))

    def reduce_only_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/orders/reduce-only", dict(order)))

    def kill_switch(self, engage: bool, reason: str, actor: str) -> dict[str, Any]:
        return dict(self._request("POST", "/kill-switch", {"engage": engage, "reason": reason, "actor": actor}))

    def explain(self, operation: str, args: Mapping[str, Any]) -> dict[str, Any]:
        paths = {"set_safety_mode": "/safety-mode", "cancel_all_orders": "/orders/cancel-all",
                 "reduce_only_order": "/orders/reduce-only", "kill_switch": "/kill-switch"}
        return {"core": "http", "request": f"POST {self.url}{paths.get(operation, '')}"}


def connect(params: Mapping[str, Any], ctx: StepContext) -> CoreAdapter:
    """The adapter for this step: step overrides first, then runbook.yaml's `core:` settings."""
    settings = dict(ctx.settings.get("core") or {})
    if params.get("core_url"):
        settings.update(adapter="http", url=params["core_url"])
    elif params.get("core_root"):
        settings.update(adapter="sim", root=params["core_root"])
    adapter = settings.get("adapter", "sim")
    if adapter == "http":
        if not settings.get("url"):
            raise PluginError("core adapter 'http' needs core.url in runbook.yaml")
        return HttpAdapter(str(settings["url"]), float(settings.get("timeout", 10)))
    if adapter == "sim":
        return SimAdapter(ctx.resolve(str(settings.get("root", "."))))
    if adapter == "freqtrade":
        state_dir = ctx.resolve(str(ctx.settings.get("state_dir") or ".runbook"))
        kill_switch = ctx.resolve(str(ctx.settings.get("kill_switch") or "KILL_SWITCH"))
        return FreqtradeAdapter(settings, state_dir, kill_switch, float(settings.get("timeout", 10)))
    raise PluginError(f"unknown core adapter {adapter!r} (expected sim, http or freqtrade)")


def drift(positions: Mapping[str, Any], tolerance: float) -> dict[str, Any]:
    """Local vs broker positions: per-symbol differences beyond `tolerance`."""
    local = positions.get("local") or {}
    broker = positions.get("broker")
    if broker is None:
        return {"reachable": False, "drift": [], "missing_symbols": [], "error": positions.get("broker_error")}
    rows, missing = [], []
    for symbol in sorted(set(local) | set(broker)):
        lq, bq = float(local.get(symbol, 0.0)), broker.get(symbol)
        if bq is None and abs(lq) > tolerance:
            missing.append(symbol)
        diff = round(float(bq or 0.0) - lq, 10)
        if abs(diff) > tolerance:
            scale = max(abs(lq), abs(float(bq or 0.0))) or 1.0
            rows.append({"symbol": symbol, "local": lq, "broker": bq, "diff": diff, "pct": round(abs(diff) / scale * 100, 4)})
    return {"reachable": True, "drift": rows, "missing_symbols": missing}
