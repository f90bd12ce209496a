"""Read-only trading-core checks: `core.state`, `core.positions`, `core.reconcile`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext
from transports.core import CORE_PARAMS, connect, drift


class CoreState:
    """Safety mode and reason, cursor, kill switch, broker, orders, equity, lock (one snapshot)."""

    name: ClassVar[str] = "core.state"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **CORE_PARAMS,
            "allowed_modes": {"type": "array", "items": {"enum": ["ARMED_LIVE", "ARMED_SAFE", "HALT"]},
                              "description": "ok only when safety_mode is one of these"},
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """The core's status; `ok` reflects `allowed_modes` when given."""
        state = dict(connect(params, ctx).status())
        allowed = params.get("allowed_modes")
        state["ok"] = state.get("safety_mode") in allowed if allowed else True
        return state


class CorePositions:
    """Local and broker positions with their differences."""

    name: ClassVar[str] = "core.positions"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "properties": dict(CORE_PARAMS),
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Positions; ok when the broker could be asked."""
        positions = dict(connect(params, ctx).positions())
        return {**positions, "ok": positions.get("broker") is not None}


class CoreFindOrder:
    """One order by client order id: the core's record and the exchange's view."""

    name: ClassVar[str] = "core.find_order"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["client_order_id"],
        "properties": {**CORE_PARAMS, "client_order_id": {"type": "string", "minLength": 1,
                                                          "description": "the id the order was sent with"}},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """`found`, `local`, `broker`, `broker_reachable`; ok when the order was found."""
        found = dict(connect(params, ctx).find_order(params["client_order_id"]))
        return {**found, "ok": bool(found.get("found"))}


class CoreReconcile:
    """Compare local and broker positions without changing anything (the read-only half of a reconcile)."""

    name: ClassVar[str] = "core.reconcile"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **CORE_PARAMS,
            "tolerance_qty": {"type": "number", "minimum": 0, "default": 1e-9,
                              "description": "differences up to this quantity are not drift"},
            "critical_pct": {"type": "number", "minimum": 0, "default": 10.0,
                             "description": "drift at or above this percentage is critical"},
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Drift per symbol; ok when the broker answered and nothing drifted."""
        adapter = connect(params, ctx)
        result = drift(adapter.positions(), float(params.get("tolerance_qty", 1e-9)))
        critical_pct = float(params.get("critical_pct", 10.0))
        result["critical"] = bool(result["missing_symbols"]) or any(d["pct"] >= critical_pct for d in result["drift"])
        result["ok"] = result["reachable"] and not result["drift"] and not result["missing_symbols"]
        return result
