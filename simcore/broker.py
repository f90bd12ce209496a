"""world.db: the simulated clock, market prices and exchange (positions, orders, fills).

The exchange keeps its own positions and orders, apart from core.db, so local and broker
state can drift; faults flip its connectivity and rate limiting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import db
from .errors import BrokerUnavailable
from .market import rng_for

DDL = """
CREATE TABLE IF NOT EXISTS world (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS broker_positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL
);
CREATE TABLE IF NOT EXISTS broker_orders (
    exchange_order_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL,
    order_type TEXT NOT NULL, limit_price REAL, reduce_only INTEGER NOT NULL,
    status TEXT NOT NULL, filled_qty REAL NOT NULL DEFAULT 0, avg_price REAL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, expires_ms INTEGER
);
"""


class World:
    """Key/value world state plus the exchange tables, over one connection."""

    def __init__(self, path: Path) -> None:
        self.conn = db.connect(path)

    def close(self) -> None:
        self.conn.close()

    def create(self, values: dict[str, Any]) -> None:
        """Create the tables and initial values."""
        self.conn.executescript(DDL)
        with db.tx(self.conn):
            for k, v in values.items():
                self.set(k, v)

    def get(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM world WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO world(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    @property
    def now_ms(self) -> int:
        return int(self.get("now_ms"))

    @property
    def seed(self) -> int:
        return int(self.get("seed"))

    def price(self, symbol: str) -> float:
        return float(self.get("prices")[symbol])

    # ------------------------------------------------------------ the exchange

    def require_up(self) -> None:
        """Raise BrokerUnavailable (TIMEOUT / RATE_LIMITED) when the exchange cannot answer."""
        if not self.get("broker_up", True):
            raise BrokerUnavailable("broker unreachable (connect timeout)", "TIMEOUT")
        if self.get("rate_limited", False):
            raise BrokerUnavailable("HTTP 429 too many requests", "RATE_LIMITED")

    def positions(self) -> dict[str, float]:
        """Broker position per symbol (symbols with no row are absent from the snapshot)."""
        return {
            r["symbol"]: r["qty"]
            for r in self.conn.execute("SELECT symbol, qty FROM broker_positions ORDER BY symbol")
        }

    def set_position(self, symbol: str, qty: float, avg_price: float | None) -> None:
        self.conn.execute(
            "INSERT INTO broker_positions(symbol, qty, avg_price) VALUES (?,?,?) "
            "ON CONFLICT(symbol) DO UPDATE SET qty=excluded.qty, avg_price=excluded.avg_price",
            (symbol, qty, avg_price),
        )

    def open_orders(self) -> list[dict[str, Any]]:
        """Resting orders at the exchange."""
        return [
            dict(r)
            for r in self.conn.execute(
                "SELECT * FROM broker_orders WHERE status='OPEN' ORDER BY created_ms, exchange_order_id"
            )
        ]

    def query(self, client_order_id: str) -> dict[str, Any] | None:
        """The exchange's view of an order by clientOrderId, or None when it never arrived."""
        row = self.conn.execute(
            "SELECT * FROM broker_orders WHERE client_order_id=?", (client_order_id,)
        ).fetchone()
        return None if row is None else dict(row)

    def equity(self) -> float:
        """Account equity: cash + mark-to-market of broker positions."""
        prices: dict[str, float] = self.get("prices")
        marks = sum(q * float(prices.get(s, 0.0)) for s, q in self.positions().items())
        return round(float(self.get("cash")) + marks, 2)

    def submit(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        order_type: str,
        limit_price: float | None,
        reduce_only: bool,
        ttl_ms: int,
        slippage_bps: float,
    ) -> dict[str, Any]:
        """Place an order (idempotent on clientOrderId). Market orders fill at once with slippage."""
        self.require_up()
        existing = self.query(client_order_id)
        if existing is not None:
            return existing
        now = self.now_ms
        seq = int(self.get("order_seq", 0)) + 1
        self.set("order_seq", seq)
        oid = f"SIM-{seq:08d}"
        status = "OPEN"
        pos = self.positions().get(symbol, 0.0)
        signed = qty if side == "buy" else -qty
        if reduce_only and (pos == 0 or pos * signed > 0 or abs(signed) > abs(pos) + 1e-12):
            status = "REJECTED"
        self.conn.execute(
            "INSERT INTO broker_orders(exchange_order_id, client_order_id, symbol, side, qty, "
            "order_type, limit_price, reduce_only, status, created_ms, updated_ms, expires_ms) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (oid, client_order_id, symbol, side, qty, order_type, limit_price, int(reduce_only),
             status, now, now, now + ttl_ms),
        )
        if status == "OPEN" and order_type == "market":
            price = self.price(symbol)
            slip = rng_for(self.seed, "slip", client_order_id).uniform(0, slippage_bps) / 1e4
            self._fill(oid, price * (1 + slip if side == "buy" else 1 - slip))
        return self.query(client_order_id) or {}

    def _fill(self, oid: str, price: float) -> None:
        o = self.conn.execute("SELECT * FROM broker_orders WHERE exchange_order_id=?", (oid,)).fetchone()
        price = round(price, 3)
        signed = o["qty"] if o["side"] == "buy" else -o["qty"]
        row = self.conn.execute(
            "SELECT qty, avg_price FROM broker_positions WHERE symbol=?", (o["symbol"],)
        ).fetchone()
        qty0, avg0 = (row["qty"], row["avg_price"]) if row else (0.0, None)
        qty1 = round(qty0 + signed, 10)
        if qty0 == 0 or qty0 * signed > 0:
            avg1 = ((avg0 or 0.0) * abs(qty0) + price * abs(signed)) / abs(qty1)
        elif qty1 * qty0 < 0:
            avg1 = price
        else:
            avg1 = avg0 or price
        self.set_position(o["symbol"], qty1, None if qty1 == 0 else round(avg1, 3))
        self.set("cash", round(float(self.get("cash")) - signed * price, 4))
        self.conn.execute(
            "UPDATE broker_orders SET status='FILLED', filled_qty=qty, avg_price=?, updated_ms=? "
            "WHERE exchange_order_id=?",
            (price, self.now_ms, oid),
        )

    def match(self, bar: dict[str, Any], slippage_bps: float) -> int:
        """Fill resting limit orders the bar crosses, expire old ones; returns fills."""
        fills = 0
        for o in self.open_orders():
            if o["expires_ms"] is not None and self.now_ms >= o["expires_ms"]:
                self.conn.execute(
                    "UPDATE broker_orders SET status='EXPIRED', updated_ms=? WHERE exchange_order_id=?",
                    (self.now_ms, o["exchange_order_id"]),
                )
                continue
            if o["symbol"] != "XAUUSD":
                continue
            slip = rng_for(self.seed, "slip", o["client_order_id"]).uniform(0, slippage_bps) / 1e4
            lim = o["limit_price"]
            if o["side"] == "buy" and float(bar["low"]) <= lim:
                self._fill(o["exchange_order_id"], min(lim, float(bar["open"]) * (1 + slip)))
                fills += 1
            elif o["side"] == "sell" and float(bar["high"]) >= lim:
                self._fill(o["exchange_order_id"], max(lim, float(bar["open"]) * (1 - slip)))
                fills += 1
        return fills

    def cancel_all(self, symbol: str | None = None) -> list[str]:
        """Cancel every resting order (optionally one symbol); returns the client ids."""
        self.require_up()
        ids = [o["client_order_id"] for o in self.open_orders() if symbol in (None, o["symbol"])]
        for cid in ids:
            self.conn.execute(
                "UPDATE broker_orders SET status='CANCELED', updated_ms=? WHERE client_order_id=?",
                (self.now_ms, cid),
            )
        return ids
