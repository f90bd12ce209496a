"""Market data: deterministic M1 bars, the live CSV file and its quality checks."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from .fsutil import append_line, atomic_write_text, iso_utc

HEADER = ["ts_ms", "time_utc", "open", "high", "low", "close", "volume"]
Bar = dict[str, float | int | str]
START_PRICES = {"XAUUSD": 2650.0, "BTCUSDT": 97000.0}
VOLATILITY = {"XAUUSD": 0.0004, "BTCUSDT": 0.0008}


class DataInvalid(ValueError):
    """The CSV is missing, unreadable or not a bar series."""


def rng_for(seed: int, *parts: object) -> random.Random:
    """A Random seeded from the seed and a purpose (stable across processes)."""
    return random.Random(":".join([str(seed), *map(str, parts)]))


def make_bar(seed: int, ts_ms: int, prev_close: float) -> Bar:
    """The XAUUSD bar at ts_ms given the previous close (pure function of its inputs)."""
    r = rng_for(seed, "bar", ts_ms)
    o = prev_close
    c = o * (1 + r.gauss(0, VOLATILITY["XAUUSD"]))
    hi = max(o, c) * (1 + abs(r.gauss(0, 0.0001)))
    lo = min(o, c) * (1 - abs(r.gauss(0, 0.0001)))
    return {
        "ts_ms": ts_ms,
        "time_utc": iso_utc(ts_ms),
        "open": round(o, 3),
        "high": round(hi, 3),
        "low": round(lo, 3),
        "close": round(c, 3),
        "volume": r.randint(50, 500),
    }


def walk_price(seed: int, symbol: str, step: int, price: float) -> float:
    """Next price of a symbol not in the CSV (one random-walk step)."""
    r = rng_for(seed, "walk", symbol, step)
    return round(price * (1 + r.gauss(0, VOLATILITY.get(symbol, 0.0005))), 2)


def _row(bar: Bar) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([bar[k] for k in HEADER])
    return buf.getvalue()


def write_csv(path: Path, bars: list[Bar]) -> None:
    """Atomically (re)write the whole CSV."""
    atomic_write_text(path, ",".join(HEADER) + "\n" + "".join(_row(b) + "\n" for b in bars))


def append_bar(path: Path, bar: Bar) -> None:
    """Append one bar line."""
    append_line(path, _row(bar))


def read_csv(path: Path) -> list[Bar]:
    """All bars of the CSV; raises DataInvalid when it is not a valid bar series."""
    if not path.is_file():
        raise DataInvalid(f"csv not found: {path}")
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != HEADER:
        raise DataInvalid(f"bad csv header in {path}: expected {','.join(HEADER)}")
    bars: list[Bar] = []
    for n, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            bar: Bar = {
                "ts_ms": int(row[0]),
                "time_utc": row[1],
                "open": float(row[2]),
                "high": float(row[3]),
                "low": float(row[4]),
                "close": float(row[5]),
                "volume": int(float(row[6])),
            }
        except (ValueError, IndexError) as exc:
            raise DataInvalid(f"{path}:{n}: malformed bar: {exc}") from exc
        if bars and int(bar["ts_ms"]) <= int(bars[-1]["ts_ms"]):
            raise DataInvalid(f"{path}:{n}: timestamps not increasing")
        bars.append(bar)
    if not bars:
        raise DataInvalid(f"{path}: no bars")
    return bars


def quality(
    bars: list[Bar], now_ms: int, interval_ms: int, window: int, max_stale_ms: int
) -> list[tuple[str, str]]:
    """Data problems as (code, detail): data_gap (missing bars in the window), stale_data."""
    problems: list[tuple[str, str]] = []
    recent = bars[-window:]
    missing = sum(
        (int(b["ts_ms"]) - int(a["ts_ms"])) // interval_ms - 1
        for a, b in zip(recent, recent[1:], strict=False)
        if int(b["ts_ms"]) - int(a["ts_ms"]) > interval_ms
    )
    if missing:
        problems.append(("data_gap", f"missing_bars={missing} in last {window} bars"))
    age = now_ms - int(bars[-1]["ts_ms"])
    if age > max_stale_ms:
        problems.append(("stale_data", f"last_bar_age_sec={age // 1000} > {max_stale_ms // 1000}"))
    return problems


def max_abs_return_pct(bars: list[Bar], last_n: int) -> float:
    """Largest absolute close-to-close return (percent) over the last bars."""
    recent = bars[-(last_n + 1) :]
    return max(
        (abs(float(b["close"]) / float(a["close"]) - 1) * 100 for a, b in zip(recent, recent[1:], strict=False)),
        default=0.0,
    )


def fill_gaps(bars: list[Bar], interval_ms: int) -> list[Bar]:
    """Bars with missing minutes filled by linear interpolation of the closes."""
    out: list[Bar] = []
    for bar in bars:
        if out:
            prev = out[-1]
            steps = (int(bar["ts_ms"]) - int(prev["ts_ms"])) // interval_ms
            for i in range(1, steps):
                c = float(prev["close"]) + (float(bar["open"]) - float(prev["close"])) * i / steps
                ts = int(prev["ts_ms"]) + i * interval_ms
                out.append(
                    {"ts_ms": ts, "time_utc": iso_utc(ts), "open": round(float(out[-1]["close"]), 3),
                     "high": round(max(c, float(out[-1]["close"])), 3),
                     "low": round(min(c, float(out[-1]["close"])), 3), "close": round(c, 3), "volume": 0}
                )
        out.append(bar)
    return out
