"""Trading-core actions: safety mode, cancel all orders, reduce-only order, kill switch.

Each passes the engine's idempotency token on (as the client order id or the
cancel token), so an in-doubt invocation is verified, not repeated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext
from transports.core import CORE_PARAMS, connect

MODES = ["ARMED_LIVE", "ARMED_SAFE", "HALT"]


def _actor(ctx: StepContext) -> str:
    return f"runbook:{ctx.run_id}:{ctx.step_id}"


def client_order_id(params: Mapping[str, Any], ctx: StepContext) -> str:
    """The order's client id: given, or derived from the idempotency token (exchange-safe characters)."""
    given = params.get("client_order_id")
    if given:
        return str(given)
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"rb-{ctx.idempotency_token}")[:64]


class SetSafetyMode:
    """Move the core to ARMED_LIVE / ARMED_SAFE / HALT with a reason code (audited by the core)."""

    name: ClassVar[str] = "core.set_safety_mode"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["mode", "reason_code"],
        "properties": {
            **CORE_PARAMS,
            "mode": {"enum": MODES, "description": "the safety mode to move to"},
            "reason_code": {"type": "string", "minLength": 1, "description": "machine-readable reason (audited)"},
            "reason_message": {"type": "string", "description": "human-readable reason (audited)"},
            "allow_non_halt": {"type": "boolean", "default": False,
                               "description": "allow forcing a promotion that does not start from HALT"},
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Request the transition; a refusal by the core fails the step."""
        return dict(connect(params, ctx).set_safety_mode(
            params["mode"], params["reason_code"], params.get("reason_message", ""), _actor(ctx),
            bool(params.get("allow_non_halt", False))))

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Current and requested mode."""
        adapter = connect(params, ctx)
        current = adapter.status()
        return Plan(f"set safety mode {current.get('safety_mode')} -> {params['mode']} ({params['reason_code']})",
                    {"from": current.get("safety_mode"), "to": params["mode"], "reason_code": params["reason_code"],
                     "reason_message": params.get("reason_message", ""),
                     "core_request": adapter.explain("set_safety_mode", params)})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Present when the core is in that mode with that reason code."""
        state = connect(params, ctx).status()
        return bool(state.get("safety_mode") == params["mode"] and state.get("safety_reason_code") == params["reason_code"])


class CancelAllOrders:
    """Cancel every open order (risk-off: may run while the kill switch is engaged if the step says so)."""

    name: ClassVar[str] = "core.cancel_all_orders"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "properties": dict(CORE_PARAMS),
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Cancel with the idempotency token as the cancel token (a repeat is a replay)."""
        return dict(connect(params, ctx).cancel_all_orders(ctx.idempotency_token, _actor(ctx)))

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The orders that would be cancelled."""
        adapter = connect(params, ctx)
        orders = adapter.open_orders()
        return Plan(f"cancel {len(orders)} open order(s)",
                    {"client_order_ids": [o.get("client_order_id") for o in orders], "token": ctx.idempotency_token,
                     "core_request": adapter.explain("cancel_all_orders", params)})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Present when no order is open."""
        return not connect(params, ctx).open_orders()


class ReduceOnlyOrder:
    """A market reduce-only order; the client order id is the idempotency token unless given."""

    name: ClassVar[str] = "core.reduce_only_order"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["symbol", "side"],
        "properties": {
            **CORE_PARAMS,
            "symbol": {"type": "string", "description": "instrument, e.g. BTCUSDT"},
            "side": {"enum": ["buy", "sell"], "description": "sell reduces a long, buy reduces a short"},
            "notional": {"type": "number", "exclusiveMinimum": 0, "description": "order size in quote currency"},
            "qty": {"type": "number", "exclusiveMinimum": 0, "description": "order size in base units"},
            "risk_off": {"type": "boolean", "default": False, "description": "allowed while HALT / kill switch"},
            "client_order_id": {"type": "string", "description": "default: derived from the idempotency token"},
        },
        "oneOf": [{"required": ["notional"]}, {"required": ["qty"]}],
    }

    def _order(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        order = {"symbol": params["symbol"], "side": params["side"], "client_order_id": client_order_id(params, ctx),
                 "risk_off": bool(params.get("risk_off", False))}
        for key in ("notional", "qty"):
            if key in params:
                order[key] = params[key]
        return order

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Submit; ok only when FILLED."""
        result = dict(connect(params, ctx).reduce_only_order(self._order(params, ctx)))
        result["ok"] = result.get("status") == "FILLED"
        return result

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The order that would be sent."""
        order = self._order(params, ctx)
        size = f"notional {order['notional']}" if "notional" in order else f"qty {order['qty']}"
        request = connect(params, ctx).explain("reduce_only_order", order)
        caveat = f" (would fail: {request['would_fail']})" if request.get("would_fail") else ""
        return Plan(f"reduce-only market {order['side']} {order['symbol']} {size} as {order['client_order_id']}{caveat}",
                    {**order, "core_request": request})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Ask the core (and through it the exchange) for the client order id."""
        try:
            found = connect(params, ctx).find_order(client_order_id(params, ctx))
        except PluginError:
            return None
        if found.get("found"):
            return True
        return False if found.get("broker_reachable", True) else None


class KillSwitch:
    """Engage (cancel orders, HALT) or release the core's kill switch."""

    name: ClassVar[str] = "core.kill_switch"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["engage", "reason"],
        "properties": {**CORE_PARAMS,
                       "engage": {"type": "boolean", "description": "true engages, false releases (needs an approval first)"},
                       "reason": {"type": "string", "minLength": 1, "description": "why (written into the kill-switch payload)"}},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Engage or release."""
        return dict(connect(params, ctx).kill_switch(bool(params["engage"]), params["reason"], _actor(ctx)))

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """What would change."""
        adapter = connect(params, ctx)
        engaged = bool(adapter.status().get("kill_switch", {}).get("engaged"))
        verb = "engage" if params["engage"] else "release"
        return Plan(f"{verb} the core's kill switch (now {'engaged' if engaged else 'released'}): {params['reason']}",
                    {"engage": params["engage"], "currently_engaged": engaged, "reason": params["reason"],
                     "core_request": adapter.explain("kill_switch", params)})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Present when the switch is in the requested position."""
        return bool(connect(params, ctx).status().get("kill_switch", {}).get("engaged")) == bool(params["engage"])
