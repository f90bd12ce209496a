"""Prometheus text exposition (format 0.0.4) of a core's status."""

from __future__ import annotations

from typing import Any

from .safety import MODES


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(status: dict[str, Any]) -> str:
    """Gauges: safety mode (labelled), positions, equity, drawdown, open orders, kill switch, ..."""
    out: list[str] = []

    def gauge(name: str, help_: str, samples: list[tuple[dict[str, str], float | int | None]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            if value is None:
                continue
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            num = str(value) if isinstance(value, int) else repr(float(value))
            out.append(f"{name}{{{lab}}} {num}" if lab else f"{name} {num}")

    mode = status.get("safety_mode")
    gauge("simcore_safety_mode", "1 for the current safety mode, 0 for the others.",
          [({"mode": m}, int(m == mode)) for m in MODES])
    gauge("simcore_safety_reason_info", "The reason code of the current safety mode (always 1).",
          [({"mode": str(mode), "reason_code": str(status.get("safety_reason_code"))}, 1)])
    pos = status.get("positions", {})
    samples = [({"symbol": s, "source": "local"}, q) for s, q in sorted(pos.get("local", {}).items())]
    samples += [({"symbol": s, "source": "broker"}, q) for s, q in sorted((pos.get("broker") or {}).items())]
    gauge("simcore_position_qty", "Position quantity per symbol, local state vs broker.", samples)
    gauge("simcore_equity", "Account equity (cash + mark-to-market).", [({}, status.get("equity"))])
    gauge("simcore_drawdown_ratio", "Drawdown from peak equity (0..1).", [({}, status.get("drawdown"))])
    gauge("simcore_open_orders", "Orders not yet terminal.", [({}, status.get("open_orders"))])
    gauge("simcore_kill_switch_engaged", "1 when the KILL_SWITCH file exists.",
          [({}, int(bool(status.get("kill_switch", {}).get("engaged"))))])
    gauge("simcore_broker_up", "1 when the broker is reachable.", [({}, int(bool(status.get("broker_up"))))])
    gauge("simcore_last_processed_timestamp_ms", "Ingest cursor (ms since epoch).",
          [({}, status.get("last_processed_timestamp_ms"))])
    gauge("simcore_sim_now_ms", "Simulated clock (ms since epoch).", [({}, status.get("sim_now_ms"))])
    gauge("simcore_audit_log_rows", "Rows in audit_log.", [({}, status.get("audit_log_count"))])
    return "\n".join(out) + "\n"
