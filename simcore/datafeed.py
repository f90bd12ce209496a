"""Seed 001's data source: daily bars per active symbol, the data-source connection, and the
two recovery tools of the data-quality branch (`simcore data-refresh`, `simcore validate-bars`).

Bars live in `data/daily/<SYMBOL>.csv` (date, open, high, low, close); the connection in
`data/daily/connection.json`. Each tool returns (exit_code, [one JSON document]).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json, atomic_write_text, iso_utc, read_json
from .market import rng_for

Out = tuple[int, list[str]]
SYMBOLS: dict[str, float] = {"XAUUSD": 2650.0, "BTCUSDT": 64_000.0}
HISTORY_DAYS = 45
MAX_DAILY_MOVE_PCT = 20.0


def daily_dir(root: Path) -> Path:
    """Where the daily bars and the connection record live."""
    return root / "data" / "daily"


def _day(now_ms: int) -> date:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()


def write_history(root: Path, seed: int, now_ms: int) -> None:
    """Deterministic daily OHLC bars for every active symbol, through the day before `now_ms`."""
    d = daily_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    last = _day(now_ms) - timedelta(days=1)
    for sym, price in SYMBOLS.items():
        rows = []
        for i in range(HISTORY_DAYS - 1, -1, -1):
            day = (last - timedelta(days=i)).isoformat()
            r = rng_for(seed, "daily001", sym, day)
            o = price
            c = round(o * (1 + r.gauss(0, 0.01)), 2)
            rows.append({"date": day, "open": o, "high": round(max(o, c) * 1.004, 2),
                         "low": round(min(o, c) * 0.996, 2), "close": c})
            price = c
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["date", "open", "high", "low", "close"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(d / f"{sym}.csv", buf.getvalue())
    atomic_write_json(d / "connection.json", {"session_id": f"data-{now_ms // 60_000}", "connected_ms": now_ms})


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [{"date": r["date"], **{k: float(r[k]) for k in ("open", "high", "low", "close")}}
                for r in csv.DictReader(fh)]


def check_symbols(root: Path, symbols: list[str], now_ms: int, days: int) -> dict[str, dict[str, Any]]:
    """Per symbol: how many of the latest `days` daily bars (through yesterday) are valid - present,
    OHLC consistent, no move beyond MAX_DAILY_MOVE_PCT - and what is wrong with the others."""
    last = _day(now_ms) - timedelta(days=1)
    want = [(last - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    report: dict[str, dict[str, Any]] = {}
    for sym in symbols:
        path = daily_dir(root) / f"{sym}.csv"
        rows = {r["date"]: r for r in _rows(path)} if path.exists() else {}
        findings, valid, prev = [], 0, None
        for day in want:
            bar = rows.get(day)
            if bar is None:
                findings.append(f"{day}: missing")
                prev = None
                continue
            if not (bar["low"] <= min(bar["open"], bar["close"]) and bar["high"] >= max(bar["open"], bar["close"])
                    and bar["low"] > 0):
                findings.append(f"{day}: inconsistent OHLC")
            elif prev is not None and abs(bar["close"] / prev - 1) * 100 > MAX_DAILY_MOVE_PCT:
                findings.append(f"{day}: close moved {round((bar['close'] / prev - 1) * 100, 1)}%")
            else:
                valid += 1
            prev = bar["close"]
        report[sym] = {"validated": valid, "required": days, "findings": findings}
    return report


def validate(root: Path, run_id: str, now_ms: int, days: int) -> Out:
    """Validate the latest `days` daily bars of every active symbol of the session (its
    data_quality_latest.json). Exit 0 when every symbol has `days` valid bars."""
    snap = root / "results" / "runs" / run_id / "data_quality_latest.json"
    symbols = list(read_json(snap).get("symbols", [])) if snap.exists() else []
    if not symbols:
        return 2, [json.dumps({"error": f"no active symbols in {snap}"})]
    report = check_symbols(root, symbols, now_ms, days)
    ok = all(v["validated"] == days for v in report.values())
    out = {"run_id": run_id, "through": (_day(now_ms) - timedelta(days=1)).isoformat(), "days": days,
           "symbols": report, "ok": ok, "summary": f"BARS_VALIDATION={'PASS' if ok else 'FAIL'}"}
    return (0 if ok else 1), [json.dumps(out, indent=2, sort_keys=True)]


def refresh(root: Path, run_id: str, now_ms: int, feed_stalled: bool) -> Out:
    """Refresh the data-source connection: a new session, recorded in the connection record and
    the session's gateway stats; exit 1 when the source still delivers nothing (feed stalled)."""
    if feed_stalled:
        return 1, [json.dumps({"refreshed": False, "error": "data source reconnected but no new bar arrives "
                               "(feed stalled)", "summary": "DATA_REFRESH=FAIL"})]
    conn = {"session_id": f"data-{now_ms // 60_000}-r", "connected_ms": now_ms, "refreshed_at": iso_utc(now_ms)}
    atomic_write_json(daily_dir(root) / "connection.json", conn)
    stats_path = root / "results" / "runs" / run_id / "gateway_stats.json"
    if stats_path.exists():
        atomic_write_json(stats_path, {**read_json(stats_path), "data_session_id": conn["session_id"],
                                       "data_refreshed_ms": now_ms})
    return 0, [json.dumps({"refreshed": True, **conn, "summary": "DATA_REFRESH=OK"}, indent=2, sort_keys=True)]
