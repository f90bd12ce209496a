"""Creating a fresh core directory: layout, settings, schema v3 DB, seed bars and the genesis ledger.

`Core.init` calls `create`, then opens the core and writes its first metrics line and report.
"""

from __future__ import annotations

from pathlib import Path

from . import clock, db, ledger, market
from .broker import World
from .errors import Refused
from .fsutil import atomic_write_json
from .paths import Layout
from .settings import DEFAULT_SETTINGS, SCHEMA, config_hash, dump_yaml

DEFAULT_START_MS = 1_769_040_000_000  # 2026-01-22T00:00:00Z
START_CASH = 100_000.0
SEED_POSITIONS = {"BTCUSDT": (0.05, 97_000.0), "XAUUSD": (0.0, None)}


def create(root: Path | str, seed: int, start_ms: int) -> Path:
    """Write every file of a new core under root (refused if it exists); returns the resolved root."""
    lay = Layout(Path(root).resolve())
    if lay.world_db.exists():
        raise Refused(f"{lay.root} is already initialized")
    for d in (lay.config_dir, lay.state_dir, lay.csv.parent, lay.lock_file.parent,
              lay.incidents, lay.meta_log.parent, lay.backups):
        d.mkdir(parents=True, exist_ok=True)
    settings = DEFAULT_SETTINGS
    lay.settings.write_text("# simcore settings (validated by config/schema.json)\n"
                            + dump_yaml(settings), encoding="utf-8")
    atomic_write_json(lay.schema, SCHEMA)
    interval = int(settings["ingest"]["bar_interval_ms"])
    bars: list[market.Bar] = []
    prev = market.START_PRICES["XAUUSD"]
    n = int(settings["data"]["check_window_bars"])
    for i in range(n):
        bar = market.make_bar(seed, start_ms - (n - 1 - i) * interval, prev)
        bars.append(bar)
        prev = float(bar["close"])
    market.write_csv(lay.csv, bars)
    prices = {"XAUUSD": prev, "BTCUSDT": market.START_PRICES["BTCUSDT"]}
    cash = START_CASH - sum(q * (p or 0) for q, p in SEED_POSITIONS.values())
    world = World(lay.world_db)
    world.create({
        "seed": seed, "now_ms": start_ms, "step": 0, "cash": cash, "prices": prices,
        "broker_up": True, "rate_limited": False, "feed_stalled": False, "faults": {},
        "order_seq": 0,
        "exchange_time_offset_ms": market.rng_for(seed, "offset").randint(-250, 250),
    })
    with db.tx(world.conn):
        for sym, (q, p) in SEED_POSITIONS.items():
            world.set_position(sym, q, p)
    world.close()
    conn = db.connect(lay.db_path(settings))
    mode = settings["safety"]["startup_mode"]
    db.create_schema(conn, start_ms, mode, "STARTUP", "initialized by simcore init")
    with db.tx(conn):
        for sym, (q, p) in SEED_POSITIONS.items():
            conn.execute("INSERT INTO positions VALUES (?,?,?,?)", (sym, q, p, start_ms))
        for b in bars:
            conn.execute("INSERT INTO processed_txs VALUES (?,?,?,?)",
                         (f"XAUUSD:M1:{b['ts_ms']}", b["ts_ms"], "bar", start_ms))
        clock.set_cursor(conn, int(bars[-1]["ts_ms"]), start_ms)
        conn.execute("INSERT INTO equity_curve VALUES (?,?,?,?)",
                     (start_ms, START_CASH, START_CASH, 0.0))
    conn.close()
    ledger.append_snapshot(lay, {
        "cycle": 0, "strategy": {"lookback": 5, "exposure_multiplier": 1.0},
        "sim_ts_ms": start_ms, "last_bar_ts_ms": bars[-1]["ts_ms"], "equity": START_CASH,
        "safety_mode": mode, "config_hash": config_hash(settings),
    }, start_ms, op="genesis")
    ledger.log_event(lay, "simcore", "init", seed=seed, sim_ts_ms=start_ms)
    from . import worlds

    worlds.init(lay.root, seed, start_ms, config_hash(settings))
    return lay.root
