"""The `freqtrade` trading-core adapter: the `core.*` operations over freqtrade's REST API.

`core: {adapter: freqtrade, url: http://127.0.0.1:8080, username_env: FT_USER, password_env: FT_PASS}`
in runbook.yaml. The credentials are read from the named environment variables when a step
runs and go only into the Authorization header (HTTP basic auth): never into a result, a plan
or an error message. docs/freqtrade.md is the mapping, operation by operation:

- safety modes: HALT = freqtrade `stopped` (POST /stop), ARMED_SAFE = `paused` (POST /pause:
  no new entries, open trades still managed and exitable), ARMED_LIVE = `running` (POST /start).
  freqtrade stores no reason, so the adapter journals the last transition it made (mode,
  reason code and message) under the engine's state directory and reports it only while
  freqtrade is still in that mode.
- positions: `local` = the open trades (GET /status) per symbol (`BTC/USDT` -> `BTCUSDT`),
  negative for shorts; `broker` = the account balances (GET /balance) of the same symbols.
- cancel all orders: DELETE /trades/ID/open-order for every trade with an open order.
- reduce-only order: a partial force-exit (POST /forceexit with `amount`) of the open trade on
  that symbol, market order; before sending, the adapter journals the trade's orders, so
  `find_order` (and the action's `verify`) can tell from the trade list whether the exit
  order exists, although freqtrade's exit orders carry no client order id.
- kill switch: freqtrade has none. The adapter keeps the engine's one (the `kill_switch` file
  of runbook.yaml): engaging writes it, cancels open orders and stops freqtrade; releasing
  removes the file and leaves freqtrade stopped (the runbook resets the safety mode next).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.errors import PluginError
from transports.http import fetch, safe_url
from transports.util import atomic_write_text

MODES = {"stopped": "HALT", "paused": "ARMED_SAFE", "running": "ARMED_LIVE"}
_REQUEST = {"HALT": "/stop", "ARMED_SAFE": "/pause", "ARMED_LIVE": "/start"}
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SETTLE_S = 10.0  # how long to wait for freqtrade to report an order it accepted


def symbol_of(pair: str) -> str:
    """freqtrade's pair as the runbooks' symbol: `BTC/USDT` and `BTC/USDT:USDT` -> `BTCUSDT`."""
    return pair.split(":")[0].replace("/", "")


class FreqtradeAdapter:
    """Drives one freqtrade bot through its REST API (`/api/v1/...`)."""

    def __init__(self, settings: Mapping[str, Any], state_dir: Path, kill_switch: Path, timeout: float) -> None:
        url = str(settings.get("url") or "")
        if not url:
            raise PluginError("core adapter 'freqtrade' needs core.url in runbook.yaml (e.g. http://127.0.0.1:8080)")
        self.url = url.rstrip("/")
        self.api = self.url if self.url.endswith("/api/v1") else self.url + "/api/v1"
        self.timeout = timeout
        self.kill_switch_file = kill_switch
        names = {"username_env": settings.get("username_env") or "FREQTRADE_USERNAME",
                 "password_env": settings.get("password_env") or "FREQTRADE_PASSWORD"}
        values = {}
        for key, name in names.items():
            value = os.environ.get(str(name))
            if not value:
                raise PluginError(f"core adapter 'freqtrade': environment variable {name} (core.{key}) is not set")
            values[key] = value
        token = base64.b64encode(f"{values['username_env']}:{values['password_env']}".encode()).decode()
        self._auth = {"Authorization": f"Basic {token}"}
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", safe_url(self.url).split("://", 1)[-1])
        self.journal = state_dir / "freqtrade" / host

    # -- transport ------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None, missing: Any = None) -> Any:
        headers = {**self._auth, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            response = fetch(method, self.api + path, headers=headers, body=data, timeout=self.timeout,
                             follow_redirects=False, expect_json=False)
        except PluginError as exc:
            raise PluginError(f"freqtrade at {safe_url(self.url)} unreachable: {exc}") from None
        status = response["status"]
        try:
            payload = json.loads(response["body"] or "null")
        except ValueError:
            payload = None
        if status == 404 and missing is not None:
            return missing
        if status == 401:
            raise PluginError(f"freqtrade at {safe_url(self.url)} refused the credentials (HTTP 401): "
                              "check core.username_env / core.password_env")
        if status >= 400 or (isinstance(payload, dict) and "error" in payload):
            detail = payload.get("error") or payload.get("detail") if isinstance(payload, dict) else response["body"][:200]
            raise PluginError(f"freqtrade refused {method} {path}: HTTP {status}: {detail}")
        return payload

    def _state(self) -> dict[str, Any]:
        return dict(self._call("GET", "/show_config"))

    def _open_trades(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/status") or [])

    def _trade(self, trade_id: int) -> dict[str, Any] | None:
        """One trade, open or closed (None if freqtrade does not know it)."""
        found = self._call("GET", f"/trade/{trade_id}", missing={})
        if found:
            return dict(found)
        offset = 0
        while True:
            page = self._call("GET", f"/trades?limit=500&offset={offset}")
            for trade in page.get("trades", []):
                if trade.get("trade_id") == trade_id:
                    return dict(trade)
            offset += 500
            if offset >= int(page.get("total_trades", 0)):
                return None

    # -- journal (what freqtrade does not keep: reasons, client order ids) --------------

    def _journal_path(self, name: str) -> Path:
        return self.journal / f"{quote(name, safe='')}.json"

    def _read_journal(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._journal_path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def _write_journal(self, name: str, record: Mapping[str, Any]) -> None:
        atomic_write_text(self._journal_path(name), json.dumps(record, sort_keys=True))

    # -- the CoreAdapter operations ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The bot's state mapped to a safety mode, with trades, balances and the kill switch."""
        config = self._state()
        state = str(config.get("state", "")).lower()
        mode = MODES.get(state)
        trades = self._open_trades()
        balance = self._call("GET", "/balance")
        last = self._read_journal("safety") or {}
        same = last.get("mode") == mode
        return {
            "adapter": "freqtrade",
            "freqtrade_state": state,
            "safety_mode": mode,
            "safety_reason_code": last.get("reason_code") if same else None,
            "safety_reason_message": last.get("reason_message") if same else None,
            "schema_version": None,
            "kill_switch": self._kill_switch_state(),
            "broker_up": True,
            "dry_run": bool(config.get("dry_run")),
            "runmode": config.get("runmode"),
            "bot_name": config.get("bot_name"),
            "max_open_trades": config.get("max_open_trades"),
            "open_trades": len(trades),
            "open_orders": sum(1 for t in trades if t.get("has_open_orders")),
            "positions": self._local(trades),
            "equity": balance.get("total"),
            "stake_currency": balance.get("stake"),
            "drawdown": None,
            "audit_log_count": None,
            "lock": None,
        }

    @staticmethod
    def _local(trades: list[dict[str, Any]]) -> dict[str, float]:
        local: dict[str, float] = {}
        for trade in trades:
            symbol = symbol_of(str(trade["pair"]))
            amount = float(trade.get("amount") or 0.0)
            local[symbol] = round(local.get(symbol, 0.0) + (-amount if trade.get("is_short") else amount), 12)
        return local

    def positions(self) -> dict[str, Any]:
        """`local` from the open trades, `broker` from the account balances (base currencies)."""
        trades = self._open_trades()
        local = self._local(trades)
        pairs = {symbol_of(str(t["pair"])): str(t["pair"]) for t in trades}
        try:
            balance = self._call("GET", "/balance")
        except PluginError as exc:
            return {"local": local, "broker": None, "broker_error": str(exc), "pairs": pairs}
        stake = str(balance.get("stake") or "")
        broker: dict[str, float] = {}
        for row in balance.get("currencies", []):
            currency = str(row.get("currency"))
            if row.get("is_position"):  # futures: a signed position per contract
                qty = float(row.get("position") or 0.0)
                broker[symbol_of(currency)] = -qty if row.get("side") == "short" else qty
            elif currency != stake and float(row.get("balance") or 0.0) != 0.0:
                broker[currency + stake] = float(row["balance"])
        for symbol in local:
            broker.setdefault(symbol, 0.0)
        return {"local": local, "broker": broker, "pairs": pairs, "stake_currency": stake}

    def open_orders(self) -> list[dict[str, Any]]:
        """Every open order of every open trade."""
        orders = []
        for trade in self._open_trades():
            for order in trade.get("orders", []):
                if order.get("is_open"):
                    orders.append(self._order_view(trade, order))
        return orders

    @staticmethod
    def _order_view(trade: Mapping[str, Any], order: Mapping[str, Any]) -> dict[str, Any]:
        tag = order.get("ft_order_tag")
        entry_side = "sell" if trade.get("is_short") else "buy"
        return {"client_order_id": tag if order.get("ft_order_side") == entry_side else None,
                "exchange_order_id": order.get("order_id"), "trade_id": trade.get("trade_id"),
                "symbol": symbol_of(str(trade.get("pair"))), "pair": trade.get("pair"),
                "side": order.get("ft_order_side"), "status": order.get("status"), "qty": order.get("amount"),
                "filled_qty": order.get("filled"), "price": order.get("safe_price"), "tag": tag}

    def find_order(self, client_order_id: str) -> dict[str, Any]:
        """An entry by its `enter_tag`, or a reduce-only exit this adapter journalled, in the trade list."""
        out: dict[str, Any] = {"client_order_id": client_order_id, "local": None, "broker": None,
                               "broker_reachable": True}
        record = self._read_journal(f"order-{client_order_id}")
        if record is not None:
            out["local"] = record
            trade = self._trade(int(record["trade_id"]))
            new = [o for o in (trade or {}).get("orders", [])
                   if o.get("order_id") not in record["orders_before"] and o.get("ft_order_side") == record["side"]]
            if trade is not None and new:
                out["broker"] = self._order_view(trade, new[-1])
        else:
            for trade in self._open_trades() + self._call("GET", "/trades?limit=500").get("trades", []):
                if trade.get("enter_tag") == client_order_id:
                    entries = [o for o in trade.get("orders", []) if o.get("ft_order_tag") == client_order_id]
                    out["broker"] = self._order_view(trade, entries[0]) if entries else {"trade_id": trade["trade_id"]}
                    break
        out["found"] = out["broker"] is not None
        return out

    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str, actor: str,
                        allow_non_halt: bool) -> dict[str, Any]:
        """POST /stop, /pause or /start under the engine's transition rules; journal the reason."""
        if mode not in _REQUEST:
            raise PluginError(f"unknown mode {mode!r}; expected one of HALT, ARMED_SAFE, ARMED_LIVE")
        if not _CODE.match(reason_code):
            raise PluginError(f"reason_code must be UPPER_SNAKE_CASE, got {reason_code!r}")
        current = MODES.get(str(self._state().get("state", "")).lower())
        if mode != "HALT":
            if self.kill_switch_file.exists():
                raise PluginError(f"kill switch engaged ({self.kill_switch_file}): release it before leaving HALT "
                                  f"(requested {mode})")
            if current == "HALT" and mode == "ARMED_LIVE" and not allow_non_halt:
                raise PluginError("HALT -> ARMED_LIVE is not allowed directly: reset to ARMED_SAFE first "
                                  "(or pass allow_non_halt)")
            if current != "HALT" and not allow_non_halt:
                raise PluginError(f"current mode is {current} (not HALT): pass allow_non_halt to change it")
        answer = self._call("POST", _REQUEST[mode])
        record = {"mode": mode, "from": current, "reason_code": reason_code, "reason_message": reason_message,
                  "actor": actor, "ts_utc": _now(), "request": f"POST /api/v1{_REQUEST[mode]}",
                  "freqtrade": (answer or {}).get("status")}
        self._write_journal("safety", record)
        return {"from": current, "to": mode, "reason_code": reason_code, "reason_message": reason_message,
                "actor": actor, "freqtrade": record["freqtrade"]}

    def cancel_all_orders(self, client_token: str, actor: str) -> dict[str, Any]:
        """Cancel the open order of every trade (DELETE /trades/ID/open-order); a repeat is a replay."""
        done = self._read_journal(f"cancel-{client_token}")
        if done is not None and not self.open_orders():
            return {**done, "replayed": True}
        cancelled = []
        for order in self.open_orders():
            try:
                self._call("DELETE", f"/trades/{order['trade_id']}/open-order", missing={})
            except PluginError:
                # Cancelling an unfilled entry deletes its trade, and freqtrade then fails to
                # answer with the trade ("no active trade"): the order is gone all the same.
                if any(o["exchange_order_id"] == order["exchange_order_id"] for o in self.open_orders()):
                    raise
            cancelled.append(order)
        result = {"cancelled": len(cancelled), "client_order_ids": [o["client_order_id"] for o in cancelled],
                  "exchange_order_ids": [o["exchange_order_id"] for o in cancelled],
                  "trade_ids": [o["trade_id"] for o in cancelled]}
        self._write_journal(f"cancel-{client_token}", {**result, "actor": actor, "ts_utc": _now()})
        return {**result, "replayed": False}

    def _open_trade(self, symbol: str) -> dict[str, Any]:
        wanted = symbol_of(symbol)
        for trade in self._open_trades():
            if symbol_of(str(trade["pair"])) == wanted:
                return trade
        raise PluginError(f"freqtrade has no open trade on {symbol}: nothing to reduce")

    def _exit_request(self, order: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The open trade, the POST /forceexit body and the exit side for a reduce-only order."""
        trade = self._open_trade(str(order["symbol"]))
        exit_side = "buy" if trade.get("is_short") else "sell"
        if order["side"] != exit_side:
            raise PluginError(f"{order['side']} would not reduce the {'short' if trade.get('is_short') else 'long'} "
                              f"trade {trade['trade_id']} on {trade['pair']} (its exit side is {exit_side})")
        amount = float(order["qty"]) if "qty" in order else float(order["notional"]) / float(trade["current_rate"])
        body: dict[str, Any] = {"tradeid": trade["trade_id"], "ordertype": "market"}
        if amount < float(trade["amount"]):
            body["amount"] = amount
        return trade, body, exit_side

    def _refuse_when_stopped(self, what: str) -> None:
        if str(self._state().get("state", "")).lower() == "stopped":
            raise PluginError(f"freqtrade refuses {what} while stopped (HALT): move it to ARMED_SAFE (paused) first")

    def explain(self, operation: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """The freqtrade requests an operation would send, read-only (for plans)."""
        if operation == "set_safety_mode":
            return {"core": "freqtrade", "request": f"POST /api/v1{_REQUEST.get(str(args.get('mode')), '?')}",
                    "note": "freqtrade keeps no reason: the adapter journals it under the state directory"}
        if operation == "cancel_all_orders":
            return {"core": "freqtrade", "requests": [f"DELETE /api/v1/trades/{o['trade_id']}/open-order"
                                                      for o in self.open_orders()]}
        if operation == "kill_switch":
            if args.get("engage"):
                return {"core": "freqtrade", "requests": [f"write {self.kill_switch_file}",
                                                          "DELETE /api/v1/trades/ID/open-order for each open order",
                                                          "POST /api/v1/stop"],
                        "note": "freqtrade has no kill switch: the engine's kill-switch file stands in, and the bot is stopped"}
            return {"core": "freqtrade", "requests": [f"remove {self.kill_switch_file}"],
                    "note": "freqtrade stays stopped (HALT) until a core.set_safety_mode step"}
        if operation == "reduce_only_order":
            try:
                trade, body, _ = self._exit_request(args)
            except PluginError as exc:
                return {"core": "freqtrade", "would_fail": str(exc)}
            out = {"core": "freqtrade", "request": "POST /api/v1/forceexit", "body": body, "trade_id": trade["trade_id"],
                   "pair": trade["pair"], "trade_amount": trade["amount"],
                   "note": "a partial force-exit of the open trade; freqtrade's exit orders carry no client order id, "
                           "the adapter journals the trade's orders first so verify can find the new one"}
            if str(self._state().get("state", "")).lower() == "stopped":
                out["would_fail"] = "freqtrade refuses force-exits while stopped (HALT)"
            return out
        return {"core": "freqtrade"}

    def reduce_only_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """A partial force-exit (market) of the open trade on the symbol, idempotent on client_order_id."""
        cid = str(order["client_order_id"])
        previous = self.find_order(cid)
        if previous["found"] and previous["local"] is not None:
            return {**self._result(cid, previous["local"], previous["broker"]), "idempotent_replay": True}
        self._refuse_when_stopped("force-exits (reduce-only orders)")
        trade, body, exit_side = self._exit_request(order)
        held = float(trade["amount"])
        amount = float(body.get("amount", held))
        record = {"client_order_id": cid, "trade_id": trade["trade_id"], "pair": trade["pair"], "side": exit_side,
                  "requested_qty": min(amount, held), "amount_before": held, "ts_utc": _now(),
                  "orders_before": [o.get("order_id") for o in trade.get("orders", [])], "request": body}
        self._write_journal(f"order-{cid}", record)  # before sending: verify needs to know what was there
        self._call("POST", "/forceexit", body)
        deadline = time.monotonic() + min(self.timeout, _SETTLE_S)
        while True:
            found = self.find_order(cid)
            settled = found["broker"] is not None and found["broker"].get("status") not in ("open", None)
            if settled or time.monotonic() >= deadline:
                return {**self._result(cid, record, found["broker"]), "idempotent_replay": False}
            time.sleep(0.05)

    @staticmethod
    def _result(cid: str, record: Mapping[str, Any], broker: Mapping[str, Any] | None) -> dict[str, Any]:
        status = "UNKNOWN"
        if broker is not None:
            filled = float(broker.get("filled_qty") or 0.0)
            status = {"closed": "FILLED", "canceled": "CANCELED", "cancelled": "CANCELED", "expired": "CANCELED",
                      "rejected": "REJECTED", "open": "OPEN"}.get(str(broker.get("status")), str(broker.get("status")).upper())
            if status == "FILLED" and filled < float(broker.get("qty") or 0.0):
                status = "PARTIALLY_FILLED"
        return {"client_order_id": cid, "symbol": symbol_of(str(record["pair"])), "pair": record["pair"],
                "side": record["side"], "trade_id": record["trade_id"], "status": status,
                "requested_qty": record["requested_qty"],
                "exchange_order_id": broker.get("exchange_order_id") if broker else None,
                "filled_qty": broker.get("filled_qty") if broker else None,
                "avg_price": broker.get("price") if broker else None,
                "error_code": None if broker else "EXIT_ORDER_NOT_SEEN"}

    def _kill_switch_state(self) -> dict[str, Any]:
        if not self.kill_switch_file.exists():
            return {"engaged": False, "payload": None, "file": str(self.kill_switch_file)}
        try:
            payload = json.loads(self.kill_switch_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            payload = {"reason": "kill-switch file present (not JSON)"}
        return {"engaged": True, "payload": payload, "file": str(self.kill_switch_file)}

    def kill_switch(self, engage: bool, reason: str, actor: str) -> dict[str, Any]:
        """Engage: write the engine's kill-switch file, cancel open orders, POST /stop. Release: remove the file."""
        if not engage:
            was = self.kill_switch_file.exists()
            self.kill_switch_file.unlink(missing_ok=True)
            return {"engaged": False, "released": was, "safety_mode": MODES.get(str(self._state().get("state")))}
        payload = {"engaged": True, "reason": reason, "actor": actor, "host": socket.gethostname(), "ts_utc": _now(),
                   "core": "freqtrade"}
        already = self.kill_switch_file.exists()
        if not already:
            atomic_write_text(self.kill_switch_file, json.dumps(payload, indent=2))
        cancelled = self.cancel_all_orders(f"kill-switch-{actor}", actor)
        self._call("POST", "/stop")
        self._write_journal("safety", {"mode": "HALT", "reason_code": "KILL_SWITCH_ENGAGED", "reason_message": reason,
                                       "actor": actor, "ts_utc": _now(), "request": "POST /api/v1/stop"})
        return {"engaged": True, "already_engaged": already, "cancelled": cancelled["cancelled"], "safety_mode": "HALT"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
