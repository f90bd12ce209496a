"""Run a real freqtrade (dry-run) with no network: ccxt's HTTP choke points answer from canned data.

Usage (with the freqtrade venv's python): `offline_freqtrade.py trade --config CONFIG ...`.
ccxt funnels every REST call through `Exchange.fetch` (sync) and its async twin; both are
replaced here by a responder that serves Binance-shaped spot data for the pairs in
`OFFLINE_PRICES` (JSON `{"BTCUSDT": 50000, ...}`, default BTC and ETH). Everything else in
freqtrade is the installed program, unchanged. An unknown endpoint is an error that names it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

PRICES: dict[str, float] = json.loads(os.environ.get("OFFLINE_PRICES") or '{"BTCUSDT": 50000, "ETHUSDT": 3000}')
INTERVAL_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


def _symbol(base: str, quote: str) -> dict[str, Any]:
    return {
        "symbol": base + quote, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": ["SPOT"], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00000", "stepSize": "0.00001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000", "maxQty": "100.00000", "stepSize": "0.00000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00", "applyMinToMarket": True, "maxNotional": "9000000.00",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
    }


def _ticker(symbol: str) -> dict[str, Any]:
    price = PRICES[symbol]
    now = int(time.time() * 1000)
    return {"symbol": symbol, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": f"{price}",
            "prevClosePrice": f"{price}", "lastPrice": f"{price}", "lastQty": "1", "bidPrice": f"{price - 0.01:.2f}",
            "bidQty": "10", "askPrice": f"{price + 0.01:.2f}", "askQty": "10", "openPrice": f"{price}",
            "highPrice": f"{price}", "lowPrice": f"{price}", "volume": "1000", "quoteVolume": f"{price * 1000}",
            "openTime": now - 86_400_000, "closeTime": now, "firstId": 1, "lastId": 2, "count": 1}


def _klines(query: dict[str, str]) -> list[list[Any]]:
    price = PRICES[query["symbol"]]
    step = INTERVAL_MS.get(query.get("interval", "5m"), 300_000)
    limit = int(query.get("limit", 500))
    now = int(time.time() * 1000)
    start = int(query["startTime"]) if "startTime" in query else now - step * limit
    start -= start % step
    rows = []
    for n in range(limit):
        opened = start + n * step
        if opened > now:
            break
        rows.append([opened, f"{price}", f"{price}", f"{price}", f"{price}", "10", opened + step - 1,
                     f"{price * 10}", 10, "5", f"{price * 5}", "0"])
    return rows


def respond(url: str, method: str = "GET") -> Any:
    """The Binance answer to one request, from canned data."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = parts.path
    if path.endswith("/exchangeInfo"):
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [], "exchangeFilters": [],
                "symbols": [_symbol(s[:-4], s[-4:]) for s in PRICES]}
    if path.endswith("/klines"):
        return _klines(query)
    if path.endswith("/depth"):
        price = PRICES[query["symbol"]]
        return {"lastUpdateId": 1, "bids": [[f"{price - 0.01:.2f}", "100"]], "asks": [[f"{price + 0.01:.2f}", "100"]]}
    if path.endswith("/ticker/24hr"):
        return _ticker(query["symbol"]) if "symbol" in query else [_ticker(s) for s in PRICES]
    if path.endswith("/ticker/bookTicker"):
        rows = [{k: _ticker(s)[k] for k in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")} for s in PRICES]
        return next(r for r in rows if r["symbol"] == query["symbol"]) if "symbol" in query else rows
    if path.endswith("/ticker/price"):
        rows = [{"symbol": s, "price": f"{p}"} for s, p in PRICES.items()]
        return next(r for r in rows if r["symbol"] == query["symbol"]) if "symbol" in query else rows
    if path.endswith("/time"):
        return {"serverTime": int(time.time() * 1000)}
    if path.endswith("/ping"):
        return {}
    raise RuntimeError(f"offline freqtrade: no canned answer for {method} {url}")


def _install() -> None:
    from ccxt.async_support.base.exchange import Exchange as AsyncExchange
    from ccxt.base.errors import ExchangeNotAvailable
    from ccxt.base.exchange import Exchange

    def fetch(self: Any, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        try:
            return respond(url, method)
        except (KeyError, RuntimeError) as exc:
            raise ExchangeNotAvailable(f"offline: {method} {url}: {exc}") from None

    async def afetch(self: Any, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        return fetch(self, url, method, headers, body)

    Exchange.fetch = fetch  # type: ignore[method-assign]
    AsyncExchange.fetch = afetch  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    from freqtrade.main import main

    sys.argv[0] = "freqtrade"
    main(sys.argv[1:])
