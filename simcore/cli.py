"""`simcore`: argparse wiring only. Each subcommand calls one function and maps its result
to output lines and an exit code. Heavy modules are imported inside the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

FAULT_NAMES = ("stale_lock", "live_lock", "anomaly", "state_corrupt", "data_gap", "stale_data",
               "reconcile_drift", "broker_down", "schema_mismatch", "retry_budget",
               "backfill_window_exceeded", "loss_breach", "daily_bars_corrupt",
               # the seed 003 / 004 worlds (simcore.worlds)
               "rebalance_missed", "rebalance_missed_post_open", "provider_corrupt", "scheduler_stalled",
               "slippage_out_of_band", "model_drift", "slippage_spike", "canary_breach")


def _root(args: argparse.Namespace) -> Path:
    if getattr(args, "root", None):
        return Path(args.root)
    cfg = getattr(args, "config", None)
    if cfg:
        return Path(cfg).resolve().parent.parent
    return Path(os.environ.get("SIMCORE_ROOT") or os.getcwd())


def _core(args: argparse.Namespace) -> Any:
    from .core import Core

    return Core(_root(args))


def _emit(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True))
    return 0


def _lines(out: tuple[int, list[str]]) -> int:
    rc, lines = out
    for line in lines:
        print(line)
    return rc


def _flag(v: str) -> bool:
    if v not in ("0", "1", "true", "false"):
        raise argparse.ArgumentTypeError("expected 0 or 1")
    return v in ("1", "true")


# ------------------------------------------------------------------ commands


def cmd_init(a: argparse.Namespace) -> int:
    from .core import DEFAULT_START_MS, Core

    if a.start_ms == "now":  # align the simulated clock with the wall clock (demos)
        from .fsutil import wall_ms

        start = wall_ms() // 60_000 * 60_000
    else:
        start = int(a.start_ms) if a.start_ms else DEFAULT_START_MS
    core = Core.init(Path(a.dir), seed=a.seed, start_ms=start)
    print(f"initialized {core.root} seed={a.seed} schema_version=3")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    st = _core(a).status()
    if a.json:
        return _emit(st)
    for k, v in st.items():
        print(f"{k}={json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v}")
    return 0


def cmd_tick(a: argparse.Namespace) -> int:
    res = _core(a).tick(a.n)
    if a.json:
        return _emit(res)
    print(f"sim_now_utc={res['sim_now_utc']} safety_mode={res['safety_mode']} "
          f"reason_code={res['safety_reason_code']}")
    for e in res["events"]:
        print(f"event={e}")
    return 0


def cmd_inject(a: argparse.Namespace) -> int:
    core = _core(a)
    return _emit(core.heal("clear") if a.fault == "clear" else core.inject(a.fault))


def cmd_heal(a: argparse.Namespace) -> int:
    return _emit(_core(a).heal(a.fault))


def cmd_serve(a: argparse.Namespace) -> int:
    from .server import serve

    serve(_root(a).resolve(), a.port, Path(a.port_file) if a.port_file else None,
          announce=lambda s: print(s, flush=True))
    return 0


def cmd_json(method: str, *argnames: str) -> Any:
    def run(a: argparse.Namespace) -> int:
        return _emit(getattr(_core(a), method)(*[getattr(a, n) for n in argnames]))

    return run


def cmd_kill_switch(a: argparse.Namespace) -> int:
    return _emit(_core(a).kill_switch(a.action == "engage", a.reason, a.actor))


def cmd_db_hash(a: argparse.Namespace) -> int:
    from .db import content_hash

    core = _core(a)
    print(f"core_db={content_hash(core.db_path)}")
    print(f"world_db={content_hash(core.lay.world_db)}")
    return 0


def cmd_smoke(a: argparse.Namespace) -> int:
    from .metacycle import prod_smoke_test

    return _lines(prod_smoke_test(_core(a), a.csv))


def cmd_schedule(a: argparse.Namespace) -> int:
    from .metacycle import meta_schedule

    cmd = "simcore " + " ".join(sys.argv[1:])
    return _lines(meta_schedule(_core(a), a.csv, a.strict, a.on_lock_held, a.force_lock_break,
                                a.lock_ttl_sec, a.reason, cmd))


def cmd_rollback(a: argparse.Namespace) -> int:
    from .metacycle import meta_rollback

    return _lines(meta_rollback(_core(a), a.steps, a.to_hash, a.reason, a.dry_run, a.strict))


def cmd_002(name: str) -> Any:
    def run(a: argparse.Namespace) -> int:
        from . import copytrader_ops as t

        root, cfg, sch = _root(a), Path(a.config), Path(getattr(a, "schema", "") or "")
        calls = {
            "validate-config": lambda: t.validate_config(cfg, sch),
            "hash-config": lambda: t.hash_config(cfg),
            "preflight": lambda: t.preflight(root, cfg, sch, a.exchange_time, a.allow_create_db),
            "post-start": lambda: t.post_start(root, cfg, sch, a.metrics_tail),
            "ops-validate-run": lambda: t.ops_validate_run(root, cfg, sch, a.exchange_time, a.metrics_tail,
                                                           Path(a.output), a.allow_create_db),
            "reset-safety": lambda: t.reset_safety(root, cfg, sch, a.mode, a.reason_code,
                                                   a.reason_message, a.allow_non_halt),
            "rebuild-db": lambda: t.rebuild_db(root, cfg, sch, a.backup, a.force),
        }
        return _lines(calls[name]())

    return run


def cmd_reduce_only(a: argparse.Namespace) -> int:
    from .copytrader_ops import reduce_only

    return _lines(reduce_only(_root(a), a.symbol, a.side, a.notional, a.qty, a.client_order_id,
                              a.risk_off, a.json))


def cmd_ops(name: str) -> Any:
    """The seed 001/003/004 tools (simcore.tools_ops)."""

    def run(a: argparse.Namespace) -> int:
        from . import tools_ops as t

        core = _core(a)
        calls = {
            "promotion-gate": lambda: t.promotion_gate(core, a.run_id, a.experiment, a.strict),
            "incident-ack": lambda: t.incident_ack(core, a.run_id, a.incident_id, a.ack_by, a.notes),
            "broker-restart": lambda: t.broker_restart(core, a.run_id),
            "rebalance": lambda: {
                "data-qa": lambda: t.data_qa(core, a.source),
                "refetch": lambda: t.refetch(core, a.provider),
                "decide": lambda: t.decide(core, a.month),
                "plan": lambda: t.plan(core, a.month),
                "execute": lambda: t.execute(core, a.month, a.client_token),
                "replay": lambda: t.replay(core, a.month),
                "slippage-report": lambda: t.slippage_report(core, a.month),
                "ledger-audit": lambda: t.ledger_audit(core),
                "risk-off-plan": lambda: t.riskoff_plan(core, a.client_token, a.preview),
                "risk-off-execute": lambda: t.riskoff_execute(core, a.client_token),
            }[a.rb_command](),
            "canary": lambda: t.canary(core, next(k for k in ("status", "report", "progress", "rollback")
                                                  if getattr(a, k)) if not a.start else "start", a.start),
            "daily-report": lambda: t.daily_report(core, a.date, not a.no_send),
            "replay-suite": lambda: t.replay_suite(core, a.last_n, a.threshold, a.days),
            "key-metrics": lambda: t.key_metrics(core),
        }
        return _lines(calls[name]())

    return run


def cmd_failure_drill(a: argparse.Namespace) -> int:
    from .tools_ops import failure_drill

    return _lines(failure_drill(a.trigger, Path(a.dir), a.seed))


def cmd_datafeed(a: argparse.Namespace) -> int:
    from . import datafeed

    core = _core(a)
    st = core.status()
    if a.command == "data-refresh":
        return _lines(datafeed.refresh(core.root, a.run_id, int(st["sim_now_ms"]), bool(st["feed_stalled"])))
    return _lines(datafeed.validate(core.root, a.run_id, int(st["sim_now_ms"]), a.days))


def cmd_trader(a: argparse.Namespace) -> int:
    from . import trader

    root = _root(a).resolve()
    if a.trader_command == "run":
        return trader.run_loop(root, a.interval, a.checkpoint_every)
    calls = {
        "start": lambda: trader.start(root, a.interval, a.checkpoint_every),
        "stop": lambda: trader.stop(root, graceful=not a.kill),
        "status": lambda: trader.status(root),
    }
    return _lines(calls[a.trader_command]())


def _add_ops(add: Any) -> None:
    sp = add("failure-drill", cmd_failure_drill, "seed 002 failure trigger on a disposable core")
    sp.add_argument("--trigger", required=True)
    sp.add_argument("--dir", required=True, help="where the disposable core is created")
    sp.add_argument("--seed", type=int, default=7)
    sp = add("promotion-gate", cmd_ops("promotion-gate"), "seed 001 strict promotion gate over a paper session")
    sp.add_argument("--run-id", required=True)
    sp.add_argument("--experiment", required=True)
    sp.add_argument("--strict", action="store_true")
    sp = add("incident-ack", cmd_ops("incident-ack"), "seed 001 scripts/incident_ack.py")
    sp.add_argument("--run-id", required=True)
    sp.add_argument("--incident-id", required=True)
    sp.add_argument("--ack-by", required=True)
    sp.add_argument("--notes", default="")
    add("broker-restart", cmd_ops("broker-restart"), "seed 001 restart the broker session").add_argument(
        "--run-id", required=True)
    sp = add("rebalance", cmd_ops("rebalance"), "seed 003 rebalance system tools")
    rb = sp.add_subparsers(dest="rb_command", required=True)
    rb.add_parser("data-qa", help="data QA suite").add_argument(
        "--source", default="data", choices=["data", "primary", "secondary"])
    rb.add_parser("refetch", help="re-fetch bars from a provider").add_argument(
        "--provider", required=True, choices=["primary", "secondary"])
    for name in ("decide", "plan", "replay", "slippage-report"):
        rb.add_parser(name).add_argument("--month", required=True)
    sp = rb.add_parser("execute", help="place the month's plan, orders and fills into the ledger")
    sp.add_argument("--month", required=True)
    sp.add_argument("--client-token", required=True, help="client order ids are rb-<token>-<n>")
    rb.add_parser("ledger-audit", help="full reconciliation audit of the rebalance ledger")
    sp = rb.add_parser("risk-off-plan", help="flatten plan (reduce-only, every broker position) for the next safe window")
    sp.add_argument("--client-token", required=True, help="client order ids are ro-<token>-<n>")
    sp.add_argument("--preview", action="store_true", help="compute and print only, write nothing")
    sp = rb.add_parser("risk-off-execute", help="place the risk-off plan at or after its safe window; ledger")
    sp.add_argument("--client-token", required=True)
    sp = add("canary", cmd_ops("canary"), "seed 004 canary_orchestrator.py")
    g = sp.add_mutually_exclusive_group(required=True)
    for flag in ("status", "report", "progress", "rollback"):
        g.add_argument(f"--{flag}", action="store_true")
    g.add_argument("--start", choices=["shadow", "canary_1", "canary_2", "production"])
    sp = add("daily-report", cmd_ops("daily-report"), "seed 004 daily_report_generator.py")
    sp.add_argument("--no-send", action="store_true")
    sp.add_argument("--date")
    sp = add("replay-suite", cmd_ops("replay-suite"), "seed 004 replay_suite.py")
    sp.add_argument("--last-n", type=int)
    sp.add_argument("--threshold", type=float)
    sp.add_argument("--days", type=int)
    sp.add_argument("--date")
    add("key-metrics", cmd_ops("key-metrics"), "seed 004 §1.2 key metrics")
    add("data-refresh", cmd_datafeed, "seed 001 refresh the data-source connectivity").add_argument(
        "--run-id", required=True)
    sp = add("validate-bars", cmd_datafeed, "seed 001 validate the latest daily bars of every active symbol")
    sp.add_argument("--run-id", required=True)
    sp.add_argument("--days", type=int, default=30)
    sp = add("trader", cmd_trader, "the trading process (seed 001 DR drill): start, stop, status")
    tr = sp.add_subparsers(dest="trader_command", required=True)
    for name in ("start", "run"):
        t = tr.add_parser(name)
        t.add_argument("--interval", type=float, default=1.0, help="seconds between cycles")
        t.add_argument("--checkpoint-every", type=int, default=5, help="persist the runtime state every N cycles")
    tr.add_parser("stop").add_argument("--kill", action="store_true", help="SIGKILL: no final checkpoint")
    tr.add_parser("status")


# ------------------------------------------------------------------ parser


class _Unused:
    """Stands for the parser of a command this process does not run: every call on it is a no-op."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The simcore argument parser (seed tools keep their own flag spellings): every command, or only the
    command `only` (argparse's set-up of all fifty costs a process more than the command it runs)."""
    p = argparse.ArgumentParser(prog="simcore", description="Simulated trading core for runbook-engine.")
    p.add_argument("--root", help="core directory (default: $SIMCORE_ROOT or cwd)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=argparse.SUPPRESS, help="core directory")
    sub = p.add_subparsers(dest="command", required=True)
    def add(name: str, fn: Any, help_: str) -> Any:
        if only is not None and name != only:
            return _Unused()
        sp = sub.add_parser(name, parents=[common], help=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("init", cmd_init, "create a core directory")
    sp.add_argument("dir")
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--start-ms", default=None,
                    help="simulated start time in ms, or 'now' (default 2026-01-22T00:00:00Z)")
    add("status", cmd_status, "print the core status").add_argument("--json", action="store_true")
    sp = add("tick", cmd_tick, "advance simulated time")
    sp.add_argument("--n", type=int, default=1)
    sp.add_argument("--json", action="store_true")
    add("inject", cmd_inject, "inject a fault (or 'clear')").add_argument(
        "fault", choices=[*FAULT_NAMES, "clear"])
    add("heal", cmd_heal, "undo a fault").add_argument("fault", choices=[*FAULT_NAMES, "clear"])
    sp = add("serve", cmd_serve, "serve the HTTP API on 127.0.0.1")
    sp.add_argument("--port", type=int, default=0)
    sp.add_argument("--port-file")
    add("positions", cmd_json("positions"), "local and broker positions")
    add("orders", cmd_json("open_orders"), "open orders")
    add("find-order", cmd_json("find_order", "client_order_id"), "find an order").add_argument(
        "--client-order-id", required=True)
    sp = add("reconcile", cmd_json("reconcile", "adopt", "actor"), "reconcile local vs broker")
    sp.add_argument("--adopt", action="store_true", help="set local positions from the broker first")
    sp.add_argument("--actor", default="operator")
    sp = add("cancel-all", cmd_json("cancel_all_orders", "client_token", "actor"), "cancel all orders")
    sp.add_argument("--client-token")
    sp.add_argument("--actor", default="operator")
    sp = add("kill-switch", cmd_kill_switch, "engage or release the kill switch")
    sp.add_argument("action", choices=["engage", "release"])
    sp.add_argument("--reason", required=True)
    sp.add_argument("--actor", default="operator")
    add("db-hash", cmd_db_hash, "content hash of core.db and world.db")

    sp = add("prod-smoke-test", cmd_smoke, "seed 000 smoke test (STATUS=PASS)")
    sp.add_argument("--csv", required=True)
    sp = add("meta-schedule", cmd_schedule, "seed 000 scheduled cycle (exit-code taxonomy)")
    sp.add_argument("--csv", required=True)
    sp.add_argument("--run_once", type=_flag, default=True)
    sp.add_argument("--strict", type=_flag, default=False)
    sp.add_argument("--on_lock_held", choices=["fail", "retryable"], default="fail")
    sp.add_argument("--force_lock_break", type=_flag, default=False)
    sp.add_argument("--lock_ttl_sec", type=int, default=3600)
    sp.add_argument("--reason", default="scheduled")
    sp = add("meta-rollback", cmd_rollback, "seed 000 rollback by steps or sha256")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--to_hash")
    sp.add_argument("--reason", required=True)
    sp.add_argument("--dry_run", type=_flag, default=True)
    sp.add_argument("--strict", type=_flag, default=True)

    def cfg(sp: argparse.ArgumentParser, schema: bool = True) -> argparse.ArgumentParser:
        sp.add_argument("--config", required=True)
        if schema:
            sp.add_argument("--schema", required=True)
        return sp

    cfg(add("validate-config", cmd_002("validate-config"), "seed 002 validate_config"))
    cfg(add("hash-config", cmd_002("hash-config"), "seed 002 hash_config"), schema=False)
    for name in ("preflight", "ops-validate-run"):
        sp = cfg(add(name, cmd_002(name), f"seed 002 {name}"))
        sp.add_argument("--exchange-time", action="store_true")
        sp.add_argument("--allow-create-db", action="store_true")
        if name == "ops-validate-run":
            sp.add_argument("--metrics-tail", type=int, default=5)
            sp.add_argument("--output", required=True)
    cfg(add("post-start", cmd_002("post-start"), "seed 002 ops_poststart")).add_argument(
        "--metrics-tail", type=int, default=5)
    sp = cfg(add("reset-safety", cmd_002("reset-safety"), "seed 002 ops_reset_safety"))
    sp.add_argument("--mode", required=True, choices=["ARMED_LIVE", "ARMED_SAFE", "HALT"])
    sp.add_argument("--reason-code", required=True)
    sp.add_argument("--reason-message", required=True)
    sp.add_argument("--allow-non-halt", action="store_true")
    sp = cfg(add("rebuild-db", cmd_002("rebuild-db"), "seed 002 ops_rebuild_db"))
    sp.add_argument("--backup", action="store_true")
    sp.add_argument("--force", action="store_true")
    sp = add("reduce-only-order", cmd_reduce_only, "seed 002 reduce-only market order")
    sp.add_argument("--symbol", required=True)
    sp.add_argument("--side", required=True, choices=["buy", "sell"])
    amt = sp.add_mutually_exclusive_group(required=True)
    amt.add_argument("--notional", type=float)
    amt.add_argument("--qty", type=float)
    sp.add_argument("--client-order-id", required=True)
    sp.add_argument("--risk-off", action="store_true", help="allow while HALT / kill switch")
    sp.add_argument("--json", action="store_true")
    _add_ops(add)
    return p


def _command_named(argv: list[str]) -> str | None:
    """The first word of `argv` that is neither an option nor --root's value."""
    words = iter(argv)
    for word in words:
        if word == "--root":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    """The commands a parser was built with."""
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `simcore` console script."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_named(words))
    if not _commands(parser):  # not a command: the whole parser says so and lists them
        parser = build_parser()
    args = parser.parse_args(words)
    from .errors import SimcoreError

    try:
        return int(args.fn(args))
    except SimcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head`
        return 0
    except Exception as exc:  # a bug: one line, exit 50 (INTERNAL_ERROR)
        print(f"internal error: {exc!r}", file=sys.stderr)
        return 50


if __name__ == "__main__":
    sys.exit(main())
