"""Seed 002's ops tools: validate_config, hash_config, preflight, post-start, validation
bundle, reset_safety, rebuild_db and the reduce-only order. Each returns (exit code, lines)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from . import db
from .broker import World
from .core import Core, utc_stamp
from .errors import SimcoreError
from .fsutil import append_line, file_lock, iso_utc, wall_ms
from .settings import ConfigError, config_hash, execution_adapter_enabled, load_settings, validate

Out = tuple[int, list[str]]


def _load(config: Path, schema: Path) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        settings = load_settings(config)
    except (OSError, ConfigError) as exc:
        return None, [f"error: {exc}"]
    try:
        sch = json.loads(schema.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, [f"error: schema {schema}: {exc}"]
    return settings, [f"error: {config}: {e}" for e in validate(settings, sch)]


def validate_config(config: Path, schema: Path) -> Out:
    """Exit 0 and no output when valid; one `error:` line per problem and exit 1 otherwise."""
    _settings, errors = _load(config, schema)
    return (1, errors) if errors else (0, [])


def hash_config(config: Path) -> Out:
    """Print config_hash=<sha256 of the canonical JSON of the settings>."""
    try:
        return 0, [f"config_hash={config_hash(load_settings(config))}"]
    except (OSError, ConfigError) as exc:
        return 1, [f"error: {exc}"]


def preflight(root: Path, config: Path, schema: Path, exchange_time: bool = False,
              allow_create_db: bool = False) -> Out:
    """Config valid, time offset, DB present with schema_version 3 -> `preflight_ok`."""
    settings, errors = _load(config, schema)
    if errors or settings is None:
        return 1, [*errors, "preflight_failed reason=CONFIG_INVALID"]
    lines = [f"config_hash={config_hash(settings)}"]
    local = wall_ms()
    lines.append(f"local_time_ms={local}")
    core = Core(root, settings_path=config)
    with core.session(write=False) as (w, _c):
        up, offset = bool(w.get("broker_up")), int(w.get("exchange_time_offset_ms"))
    if exchange_time:
        if not up:
            return 1, [*lines, "preflight_failed reason=EXCHANGE_UNREACHABLE"]
        lines += [f"exchange_time_ms={local + offset}", f"time_offset_ms={offset}"]
    if not core.db_path.exists():
        if not allow_create_db:
            return 1, [*lines, f"preflight_failed reason=DB_MISSING db_path={core.db_path}"]
        _create_db(core)
        lines.append(f"db_created={core.db_path}")
    with core.session(write=False) as (_w, c):
        st = db.get_state(c)
    lines.append(f"schema_version={st.get('schema_version')}")
    if st.get("schema_version") != str(db.SCHEMA_VERSION):
        return 1, [*lines, "preflight_failed reason=SCHEMA_VERSION_MISMATCH"]
    return 0, [*lines, "preflight_ok"]


def post_start(root: Path, config: Path, schema: Path, metrics_tail: int = 5) -> Out:
    """Safety mode and reason, cursor, audit_log count, service mode and execution adapter state
    (enabled only in live), and the metrics tail; exit 1 when HALT."""
    settings, errors = _load(config, schema)
    if errors or settings is None:
        return 1, [*errors, "poststart_failed reason=CONFIG_INVALID"]
    core = Core(root, settings_path=config)
    with core.session(write=False) as (_w, c):
        st = db.get_state(c)
        audits = c.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        results = c.execute("SELECT count(*) FROM order_results").fetchone()[0]
    lines = [f"{k}={st.get(k)}" for k in ("safety_mode", "safety_reason_code", "safety_reason_message",
                                          "last_processed_timestamp_ms", "last_processed_event_key",
                                          "maintenance_skip_applied_ms")]
    lines += [f"audit_log_count={audits}", f"order_results_count={results}",
              f"mode={settings.get('mode', 'live')}",
              f"execution_adapter={'enabled' if execution_adapter_enabled(settings) else 'disabled'}"]
    mpath = Path(str(settings.get("metrics_log_path", "logs/metrics.log")))
    mpath = mpath if mpath.is_absolute() else core.root / mpath
    tail = mpath.read_text(encoding="utf-8").splitlines()[-metrics_tail:] if mpath.exists() else []
    lines.append(f"metrics_tail ({len(tail)} lines from {mpath}):")
    lines += [f"  {t}" for t in tail]
    if st.get("safety_mode") == "HALT":
        return 1, [*lines, f"poststart_failed reason=HALT:{st.get('safety_reason_code')}"]
    if not st.get("last_processed_timestamp_ms"):
        return 1, [*lines, "poststart_failed reason=CURSOR_MISSING"]
    return 0, [*lines, "poststart_ok"]


def ops_validate_run(root: Path, config: Path, schema: Path, exchange_time: bool, metrics_tail: int,
                     output: Path, allow_create_db: bool = False) -> Out:
    """Preflight + post-start evidence appended to the output file; exit 1 if either failed."""
    rc1, pre = preflight(root, config, schema, exchange_time, allow_create_db)
    rc2, post = post_start(root, config, schema, metrics_tail)
    rc = max(rc1, rc2)
    lines = [f"=== ops_validate_run {iso_utc(wall_ms())} ===", "--- preflight ---", *pre,
             "--- post-start ---", *post, f"result={'ok' if rc == 0 else 'failed'}"]
    output.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(str(output) + ".lock", timeout=30):
        append_line(output, "\n".join(lines) + "\n")
    return rc, [*lines, f"written={output}"]


def reset_safety(root: Path, config: Path, schema: Path, mode: str, reason_code: str,
                 reason_message: str, allow_non_halt: bool = False) -> Out:
    """Audited safety reset (seed 002's ops_reset_safety); exit 1 when refused."""
    _settings, errors = _load(config, schema)
    if errors:
        return 1, errors
    try:
        res = Core(root, settings_path=config).set_safety_mode(
            mode, reason_code, reason_message, actor="ops_reset_safety", allow_non_halt=allow_non_halt)
    except SimcoreError as exc:
        return 1, [f"reset_refused: {exc}"]
    return 0, [f"previous_mode={res['previous_mode']}", f"safety_mode={res['safety_mode']}",
               f"safety_reason_code={res['reason_code']}", f"audit_id={res['audit_id']}", "reset_ok"]


def _create_db(core: Core) -> None:
    world = World(core.lay.world_db)
    try:
        now = world.now_ms
    finally:
        world.close()
    conn = db.connect(core.db_path)
    try:
        db.create_schema(conn, now, "ARMED_SAFE", "DB_REBUILT", "schema recreated; reconcile before promotion")
    finally:
        conn.close()


def rebuild_db(root: Path, config: Path, schema: Path, backup: bool, force: bool) -> Out:
    """Back up the DB to <db>.bak-YYYYMMDD-HHMM and recreate an empty schema v3 (`db_rebuilt`)."""
    _settings, errors = _load(config, schema)
    if errors:
        return 1, errors
    core = Core(root, settings_path=config)
    lines: list[str] = []
    with file_lock(str(core.lay.core_lock), timeout=60):
        path = core.db_path
        if path.exists():
            if not force:
                return 1, [f"error: {path} exists; pass --force to rebuild"]
            if backup:
                dest = Path(f"{path}.bak-{utc_stamp(wall_ms())}")
                n = 1
                while dest.exists():
                    n += 1
                    dest = Path(f"{path}.bak-{utc_stamp(wall_ms())}-{n}")
                shutil.copy2(path, dest)
                lines.append(f"backup={dest}")
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_db(core)
    return 0, [*lines, f"db_path={path}", f"schema_version={db.SCHEMA_VERSION}", "db_rebuilt"]


def reduce_only(root: Path, symbol: str, side: str, notional: float | None, qty: float | None,
                client_order_id: str, risk_off: bool = False, as_json: bool = False) -> Out:
    """Submit a reduce-only order: exit 0 FILLED, 3 in doubt (UNKNOWN), 1 refused or rejected."""
    try:
        order = Core(root).reduce_only_order(symbol, side, notional, client_order_id, qty, risk_off)
    except SimcoreError as exc:
        return 1, [f"order_refused: {exc}"]
    rc = {"FILLED": 0, "UNKNOWN": 3}.get(order["status"], 1)
    if as_json:
        return rc, [json.dumps(order, sort_keys=True)]
    keys = ("status", "client_order_id", "exchange_order_id", "symbol", "side", "qty", "filled_qty",
            "avg_price", "error_code", "error_message", "idempotent_replay")
    return rc, [f"{k}={order.get(k)}" for k in keys]
