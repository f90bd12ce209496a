"""`runbook`: argument parsing and one call per command; outcomes become exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import InvalidRunbook, RunbookError, UsageError
from engine.redact import mask
from engine.vocabulary import Mode, RunStatus

DESCRIPTION = """Declarative runbooks for trading operations.

Run a runbook step by step at a terminal, unattended from an alert, or as a
dry-run that shows exactly what would happen. Every run leaves a
tamper-evident evidence bundle under evidence/<run_id>/.

exit codes: 0 SUCCESS, 10 BUSINESS_REJECT, 11 BUSINESS_SKIP, 12 PAUSED,
20 DATA_INVALID, 30 STATE_CORRUPT, 40 LOCK_TIMEOUT, 50 INTERNAL_ERROR,
60 ANOMALY_HALT, 2 command-line usage error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line: every command, or only the command `only` (argparse's set-up of every subcommand
    costs a process more than its own command's)."""
    parser = _Parser(prog="runbook", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"runbook {__version__}")
    parser.add_argument("--config", help="runbook.yaml to use (default: $RUNBOOK_CONFIG, ./runbook.yaml, "
                                         "else the nearest in a parent directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="say which runbook.yaml is used (on stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, add in _COMMANDS.items():
        if only is None or name == only:
            add(sub)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The command `argv` names (its first word that is not an option or --config's value), if it is one:
    help and a mistyped command get the whole command line."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def _add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list the runbook library")
    p.add_argument("--tag", help="only runbooks with this tag")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="steps, params and source of a runbook")
    p.add_argument("name")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="schema + graph + plugin params + template names (all of the library by default)")
    p.add_argument("targets", nargs="*", metavar="PATH|NAME")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_schema(sub: Any) -> None:
    sub.add_parser("schema", help="print the JSON Schema of runbook files (for editors)")


def _add_completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a bash completion script (zsh: bashcompinit first)")
    p.add_argument("shell", choices=["bash", "zsh"], nargs="?", default="bash")


def _add_graph(sub: Any) -> None:
    p = sub.add_parser("graph", help="the step graph as mermaid or dot")
    p.add_argument("name")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.add_argument("--output", choices=["text", "json"], default="text", help="json: nodes and edges")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run a runbook (live, or --dry-run)")
    p.add_argument("name", metavar="NAME|PATH")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a param value (repeatable)")
    p.add_argument("--params-file", metavar="F", help="YAML/JSON file of params (--param wins)")
    p.add_argument("--dry-run", action="store_true", help="run checks, plan actions, change nothing")
    p.add_argument("--step", action="store_true", help="operator mode: confirm each step (run/skip/abort/details)")
    p.add_argument("--no-input", action="store_true", help="never prompt; approvals pause the run (exit 12)")
    p.add_argument("--operator", help="who runs this (default: $RUNBOOK_OPERATOR or the login name)")
    p.add_argument("--assume", action="append", default=[], metavar="STEP=ok|fail", help="dry-run: assume a step's verdict")
    p.add_argument("--force", action="store_true", help="run even if the idempotency key already succeeded")
    p.add_argument("--force-lock-break", action="store_true", help="break a stale lock (needs --reason)")
    p.add_argument("--reason", help="why (recorded; required with --force-lock-break)")
    p.add_argument("--trigger", metavar="JSON", help="the event that started an automated run (JSON)")
    p.add_argument("--run-id", metavar="RUN_ID", help="the new run's id (automation, e.g. serve; must be unused)")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_resume(sub: Any) -> None:
    p = sub.add_parser("resume", help="continue a paused or interrupted run")
    p.add_argument("run_id")
    p.add_argument("--in-doubt", choices=["rerun", "skip", "fail"], help="what to do with a step in doubt")
    p.add_argument("--accept-changed", action="store_true", help="continue although the runbook file changed")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="the value of a secret param again (secrets are never stored)")
    p.add_argument("--no-input", action="store_true")
    p.add_argument("--operator")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_cancel(sub: Any) -> None:
    p = sub.add_parser("cancel", help="end a paused or interrupted run: rollbacks, lock and key released (exit 10)")
    p.add_argument("run_id")
    p.add_argument("--by", required=True, help="who cancels (recorded)")
    p.add_argument("--reason", required=True, help="why (recorded)")
    p.add_argument("--no-rollback", action="store_true", help="end it without running its rollbacks (recorded)")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_approve(sub: Any) -> None:
    p = sub.add_parser("approve", help="approve (or --deny) a run's approval step; `resume` then continues it")
    p.add_argument("run_id")
    p.add_argument("step")
    p.add_argument("--by", required=True, help="who approves")
    p.add_argument("--note")
    p.add_argument("--deny", action="store_true")
    p.add_argument("--key", help="sign the decision with this Ed25519 private key (approvals.require_signature)")


def _add_runs(sub: Any) -> None:
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runbook")
    p.add_argument("--outcome")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="where a run stands and what it waits for")
    p.add_argument("run_id")
    p.add_argument("--output", choices=["text", "json"], default="text")


def _add_evidence(sub: Any) -> None:
    p = sub.add_parser("evidence", help="verify, show or report an evidence bundle")
    ev = p.add_subparsers(dest="evidence_command", metavar="ACTION", parser_class=_Parser)
    for name, text in (("verify", "check the hash chain and every file (exit 30 if anything changed)"),
                       ("show", "print the events"), ("report", "print or write the report")):
        q = ev.add_parser(name, help=text)
        q.add_argument("target", metavar="DIR|RUN_ID")
        if name == "report":
            q.add_argument("--format", choices=["md", "html"], default="md")
            q.add_argument("-o", dest="out", metavar="FILE")
        if name == "show":
            q.add_argument("--output", choices=["text", "json"], default="text")
        if name == "verify":
            q.add_argument("--output", choices=["text", "json"], default="text")
            q.add_argument("--key", action="append", default=[], metavar="PUB",
                           help="Ed25519 public key (PEM) the attestation must be signed by (repeatable)")
    q = ev.add_parser("audit", help="verify every bundle and the run ledger (exit 30 naming a missing, replaced "
                                    "or unlisted bundle)")
    q.add_argument("--since", metavar="DATE", help="only bundles of runs started at or after DATE (UTC)")
    q.add_argument("--key", action="append", default=[], metavar="PUB", help="every bundle must be signed by one of these")
    q = ev.add_parser("postmortem", help="seed 004's post-mortem template filled from a run")
    q.add_argument("target", metavar="RUN_ID|DIR")
    q.add_argument("-o", dest="out", metavar="FILE")


def _add_keys(sub: Any) -> None:
    p = sub.add_parser("keys", help="Ed25519 keys that sign evidence bundles")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser)
    q = ks.add_parser("generate", help="write DIR/NAME.key (mode 0600) and DIR/NAME.pub")
    q.add_argument("name")
    q.add_argument("--dir", default=".", help="where to write the pair (default: the current directory)")


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="automated remediation: alerts and schedules become runs (until SIGTERM)")
    p.add_argument("--listen", metavar="HOST:PORT", help="where to listen (default 127.0.0.1:8787 or serve.listen)")


def _add_triggers(sub: Any) -> None:
    p = sub.add_parser("triggers", help="the trigger rules of serve: list, check, test, reset")
    tr = p.add_subparsers(dest="triggers_command", metavar="ACTION", parser_class=_Parser)
    q = tr.add_parser("list", help="the rules and their state (cooldown, breaker)")
    q.add_argument("--output", choices=["text", "json"], default="text")
    tr.add_parser("check", help="validate the rules (exit 20, located, on a bad rule)")
    q = tr.add_parser("test", help="which rule would fire for an event, with which params; starts nothing")
    q.add_argument("event", metavar="EVENT.json")
    q.add_argument("--rule", help="for a generic event: the rule it is posted to")
    q = tr.add_parser("reset", help="close a rule's open breaker (recorded)")
    q.add_argument("rule")
    q.add_argument("--by", required=True, help="who resets it")
    q.add_argument("--reason", required=True, help="why (recorded)")


_COMMANDS: dict[str, Callable[[Any], None]] = {
    "list": _add_list,
    "show": _add_show,
    "validate": _add_validate,
    "schema": _add_schema,
    "completion": _add_completion,
    "graph": _add_graph,
    "run": _add_run,
    "resume": _add_resume,
    "cancel": _add_cancel,
    "approve": _add_approve,
    "runs": _add_runs,
    "status": _add_status,
    "evidence": _add_evidence,
    "keys": _add_keys,
    "serve": _add_serve,
    "triggers": _add_triggers,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `runbook` command."""
    parser = build_parser(_command_named(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    undecodable = _undecodable(args)
    if undecodable:
        print(f"runbook: {undecodable}: not valid UTF-8 (expected UTF-8 text)", file=sys.stderr)
        return 2
    try:
        return int(_dispatch(args) or 0)
    except InvalidRunbook as exc:
        for problem in exc.problems:
            print(mask(str(problem)), file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''}; nothing was executed", file=sys.stderr)
        return exc.exit_code
    except RunbookError as exc:
        print(f"runbook: {mask(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("runbook: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug: one line and a crash log, never a traceback
        return _crash()


def _undecodable(args: argparse.Namespace) -> str | None:
    """The first argument that is not UTF-8 text (undecodable bytes arrive as surrogates), as its bytes."""
    for name, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if name != "param" and isinstance(text, str) and any("\ud800" <= c <= "\udfff" for c in text):
                return f"--{name.replace('_', '-')} {repr(os.fsencode(text))[2:-1]}"
    return None


def _crash() -> int:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="runbook-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(mask(traceback.format_exc()))
    print(f"runbook: internal error (a bug); details in {path}", file=sys.stderr)
    return 50


def _workspace(args: argparse.Namespace, output: str = "text", interactive: bool = False) -> Any:
    from engine.console import make_console
    from engine.session import Workspace

    return Workspace(_config(args), make_console(output, interactive))


def _config(args: argparse.Namespace) -> Any:
    """The configuration; with --verbose, which runbook.yaml it came from (on stderr)."""
    from engine.config import load_config

    config = load_config(args.config)
    if getattr(args, "verbose", False):
        print(f"runbook: config {describe_config(config)}", file=sys.stderr)
    return config


def describe_config(config: Any) -> str:
    """Which runbook.yaml is used, in words."""
    if config.source is None:
        return f"none (no runbook.yaml here or in a parent directory: defaults, base {config.base})"
    how = "" if Path(config.source).parent == Path.cwd().resolve() else " (found in a parent directory)"
    return f"{config.source}{how}"


def _dispatch(args: argparse.Namespace) -> int:
    handler = {
        "completion": _completion, "list": _list, "show": _show, "validate": _validate, "schema": _schema, "graph": _graph, "run": _run,
        "resume": _resume, "approve": _approve, "cancel": _cancel, "runs": _runs, "status": _status, "evidence": _evidence,
        "serve": _serve, "triggers": _triggers,
        "keys": _keys,
    }[args.command]
    return handler(args)


def _print_json(data: Any) -> None:
    from engine.redact import Redactor

    print(json.dumps(Redactor().data(data), indent=2, default=str, ensure_ascii=False))


# -- library -------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from engine import catalog

    ws = _workspace(args)
    rows = catalog.summaries(ws.library, args.tag)
    if args.output == "json":
        _print_json(rows)
        return 0
    if not rows:
        searched = ", ".join(str(p) for p in ws.library.paths) or "(no runbook paths)"
        print(f"runbook: no runbooks{f' tagged {args.tag}' if args.tag else ''} under {searched}; "
              f"config {describe_config(ws.config)}", file=sys.stderr)
    for row in rows:
        tags = f"  [{', '.join(row['tags'])}]" if row["tags"] else ""
        print(f"{row['name']:<36} {row['title']}{tags}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine import catalog

    ws = _workspace(args)
    runbook = ws.load(args.name)
    if args.output == "json":
        from engine.loader import load_file

        _print_json({"name": runbook.name, "version": runbook.version, "title": runbook.title,
                     "file": str(runbook.path), "document": load_file(Path(runbook.path)).data})
        return 0
    print(catalog.describe(runbook))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from engine import catalog

    ws = _workspace(args)
    checked, problems = catalog.validate_all(ws, args.targets)
    if args.output == "json":
        _print_json({"files": checked, "problems": [p.__dict__ for p in problems]})
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
        files_with = len({p.path for p in problems})
        summary = f"{checked} file{'s' if checked != 1 else ''} checked"
        print(f"{summary}, {len(problems)} problem{'s' if len(problems) != 1 else ''} in {files_with} file{'s' if files_with != 1 else ''}"
              if problems else f"{summary}, all valid", file=sys.stderr if problems else sys.stdout)
    return 20 if problems else 0


_COMPLETION = """# runbook completion: source <(runbook completion bash)
_runbook() {
    local cur=${COMP_WORDS[COMP_CWORD]} cmd="" i=1 opts=""
    while [ $i -lt $COMP_CWORD ]; do
        case ${COMP_WORDS[i]} in
            --config) i=$((i + 1)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
        i=$((i + 1))
    done
    case $cmd in
%(cases)s
        "") opts="%(top)s" ;;
    esac
    if [[ $cur != -* ]]; then
        case $cmd in
            run|show|graph|validate) opts="$opts $(runbook list 2>/dev/null | cut -d' ' -f1)" ;;
            resume|status|approve|cancel) opts="$opts $(runbook runs 2>/dev/null | cut -d' ' -f1)" ;;
        esac
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _runbook runbook
"""


def _completion(args: argparse.Namespace) -> int:
    """A bash completion script from the parser itself: commands, their options, runbook names and run ids."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for name, sub in commands.choices.items():
        words = [o for a in sub._actions for o in a.option_strings]
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                words += list(action.choices)
            elif action.choices and not action.option_strings:
                words += [str(c) for c in action.choices]
        cases.append(f'        {name}) opts="{" ".join(words)}" ;;')
    top = [o for a in parser._actions for o in a.option_strings] + list(commands.choices)
    script = _COMPLETION % {"cases": "\n".join(cases), "top": " ".join(top)}
    if args.shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    print(script, end="")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from engine.schema import runbook_schema

    _print_json(runbook_schema(_workspace(args).registry))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from engine import catalog

    runbook = _workspace(args).load(args.name)
    if args.output == "json":
        _print_json(catalog.graph_document(runbook))
        return 0
    print(catalog.graph(runbook, args.format))
    return 0


# -- running -------------------------------------------------------------------


def _interactive(args: argparse.Namespace) -> bool:
    return not args.no_input and args.output != "json" and sys.stdin.isatty()


def _parse_assume(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        step, sep, verdict = value.partition("=")
        if not sep or verdict not in ("ok", "fail"):
            raise UsageError(f"--assume {value!r}: expected STEP=ok or STEP=fail")
        out[step] = verdict
    return out


def _run(args: argparse.Namespace) -> int:
    from engine import signals
    from engine.params import (
        decode_json_argument,
        load_params_file,
        parse_assignments,
        resolve_params,
    )
    from engine.session import RunOptions

    if args.force_lock_break and not args.reason:
        raise UsageError("--force-lock-break needs --reason TEXT (it is recorded as evidence)")
    assume = _parse_assume(args.assume)
    if assume and not args.dry_run:
        raise UsageError("--assume only applies to --dry-run")
    trigger = decode_json_argument("--trigger", args.trigger) if args.trigger else None
    interactive = _interactive(args)
    ws = _workspace(args, args.output, interactive)
    if args.run_id:
        _check_new_run_id(ws, args.run_id)
    runbook = ws.load(args.name)
    unknown = sorted(set(assume) - {s.id for s in runbook.steps})
    if unknown:
        raise UsageError(f"--assume: no step '{unknown[0]}' in {runbook.name}")
    file_values = load_params_file(args.params_file) if args.params_file else {}
    params = resolve_params(runbook, file_values, parse_assignments(args.param))
    options = RunOptions(mode=Mode.DRY_RUN if args.dry_run else Mode.LIVE, operator=args.operator or "",
                         interactive=interactive, step_mode=args.step, assume=assume, force=args.force,
                         force_lock_break=args.force_lock_break, reason=args.reason)
    signals.install()
    result = ws.start(runbook, params, options, trigger=trigger, run_id=args.run_id or None)
    if args.output == "json":
        _print_json(_result_document(result))
    return int(result.exit_code)


def _check_new_run_id(ws: Any, run_id: str) -> None:
    """--run-id: the shape of `new_run_id`, and no run with that id yet (a run id is never reused)."""
    import re

    if not re.fullmatch(r"\d{8}T\d{6}Z-[a-z0-9][a-z0-9-]*-[0-9a-f]{6}", run_id):
        raise UsageError(f"--run-id {run_id!r}: expected YYYYMMDDTHHMMSSZ-RUNBOOK-XXXXXX (as `runbook runs` shows)")
    if ws.store.path(run_id).exists():
        raise UsageError(f"--run-id {run_id}: a run with this id already exists")


def _result_document(result: Any) -> dict[str, Any]:
    from engine.evidence import read_events

    doc = result.as_dict()
    steps = {}
    for event in read_events(result.evidence_dir / "events.jsonl"):
        if event["type"] == "step_finished" and event["data"].get("final"):
            data = event["data"]
            steps[event["step"]] = {k: data.get(k) for k in ("status", "ok", "error", "attempts", "duration_s", "result")}
    doc["steps"] = steps
    return dict(doc)


def _resume(args: argparse.Namespace) -> int:
    from engine import signals
    from engine.session import RunOptions

    interactive = _interactive(args)
    ws = _workspace(args, args.output, interactive)
    signals.install()
    from engine.resume import resume

    secret_params = dict(a.split("=", 1) for a in args.param if "=" in a)
    if len(secret_params) != len(args.param):
        raise UsageError("--param: expected K=V")
    result = resume(ws, args.run_id, RunOptions(operator=args.operator or "", interactive=interactive,
                                                in_doubt=args.in_doubt, accept_changed=args.accept_changed),
                    secret_params)
    if args.output == "json":
        _print_json(_result_document(result))
    return int(result.exit_code)


def _cancel(args: argparse.Namespace) -> int:
    from engine import signals

    ws = _workspace(args, args.output)
    signals.install()
    result = ws.cancel(args.run_id, args.by, args.reason, rollback=not args.no_rollback)
    if args.output == "json":
        _print_json(_result_document(result))
    return int(result.exit_code)


def _print_bound(waiting: dict[str, Any]) -> None:
    """The plans a plan-bound approval approves (and, after a change, what changed) for `runbook status`."""
    changed = waiting.get("changed")
    if isinstance(changed, dict):
        print(f"changed:   the plan of step '{changed.get('step')}' changed since it was approved")
        print(f"           approved: {changed.get('approved')}")
        print(f"           now:      {changed.get('now')}")
        for line in changed.get("diff") or []:
            print(f"           {line}")
    for target, plan in (waiting.get("plans") or {}).items():
        for n, one in enumerate(plan if isinstance(plan, list) else [plan]):
            label = f"plan of {target}" + (f"[{n}]" if isinstance(plan, list) else "")
            if not isinstance(one, dict):
                print(f"{label}: {one}")
                continue
            print(f"{label}: {one.get('summary') or one.get('error')}")
            for key, value in one.items():
                if key in ("summary",):
                    continue
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                lines = text.splitlines() or [""]
                print(f"           {key}: {lines[0]}")
                for line in lines[1:200]:
                    print(f"             {line}")
    if waiting.get("plan_sha256"):
        print(f"           plan sha256: {waiting['plan_sha256']} (signed with the decision: runbook approve ... --key KEY)")


def _approve(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    if args.key:
        from engine.approve import approve

        decision = approve(ws, args.run_id, args.step, args.by, args.note, args.deny, key=Path(args.key))
    else:
        decision = ws.approve(args.run_id, args.step, args.by, args.note, args.deny)
    driver = args.run_id
    try:  # a sub-runbook's run goes on when its top-most parent is resumed
        record = ws.store.load(driver)
        while record.parent_run_id:
            driver, record = record.parent_run_id, ws.store.load(record.parent_run_id)
    except RunbookError:
        pass
    print(f"{decision['decision']} step '{args.step}' of run {args.run_id} by {args.by}; "
          f"continue with: runbook resume {driver}")
    return 0


# -- automated remediation -----------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.serve.app import serve

    return serve(load_config(args.config), args.listen)


def _triggers(args: argparse.Namespace) -> int:
    from engine import triggers
    from engine.config import load_config

    if not args.triggers_command:
        raise UsageError("triggers needs an action: list, check, test or reset")
    config = load_config(args.config)
    if args.triggers_command == "list":
        return triggers.list_rules(config, args.output)
    if args.triggers_command == "check":
        return triggers.check(config)
    if args.triggers_command == "test":
        return triggers.test(config, args.event, args.rule)
    return triggers.reset(config, args.rule, args.by, args.reason)


# -- runs and evidence -----------------------------------------------------------


def _runs(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine.runs import RunStore, effective_status

    records = [r for r in RunStore(_config(args).state_dir).all() if (not args.runbook or r.runbook == args.runbook)
               and (not args.outcome or r.outcome == args.outcome)]
    if args.output == "json":
        _print_json([{**asdict(r), "status": effective_status(r)} for r in records])
        return 0
    rows = [(r.run_id, r.runbook, r.mode, effective_status(r), r.outcome or "-", r.started_at) for r in records]
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        from rich.console import Console
        from rich.table import Table

        table = Table("RUN ID", "RUNBOOK", "MODE", "STATUS", "OUTCOME", "STARTED (UTC)", box=None, header_style="bold")
        for row in rows:
            table.add_row(*(mask(str(v)) for v in row))
        Console(highlight=False).print(table)
        return 0
    if sys.stdout.isatty():
        print(f"{'RUN ID':<56} {'RUNBOOK':<24} {'MODE':<8} {'STATUS':<12} {'OUTCOME':<16} STARTED (UTC)")
    for run_id, runbook, mode, status, outcome, started in rows:
        print(f"{run_id:<56} {runbook:<24} {mode:<8} {status:<12} {outcome:<16} {started}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine.approvals import ApprovalBox, Policy
    from engine.runs import RunStore, effective_status

    config = _config(args)
    record = RunStore(config.state_dir).load(args.run_id)
    status = effective_status(record)
    if args.output == "json":
        _print_json({**asdict(record), "status": status})
        return 0
    print(f"run:       {record.run_id}")
    print(f"runbook:   {record.runbook} ({record.runbook_path})")
    print(f"mode:      {record.mode}   operator: {record.operator}")
    print(f"status:    {status}   outcome: {record.outcome or '-'}")
    print(f"started:   {record.started_at}   ended: {record.ended_at or '-'}")
    print(f"evidence:  {record.evidence_dir}")
    waiting = record.waiting_for
    if waiting:
        if waiting.get("type") == "approval":
            who = f" (approvers: {', '.join(waiting['approvers'])})" if waiting.get("approvers") else ""
            print(f"waiting:   approval of step '{waiting['step']}': {waiting.get('prompt')}{who}")
            print(f"           runbook approve {record.run_id} {waiting['step']} --by NAME [--deny]; then runbook resume {record.run_id}")
            _print_bound(waiting)
        elif waiting.get("type") == "in_doubt":
            print(f"waiting:   step '{waiting['step']}' is in doubt; runbook resume {record.run_id} --in-doubt rerun|skip|fail")
        elif waiting.get("type") == "interrupted":
            print(f"waiting:   interrupted by {waiting.get('signal', 'a signal')}; continue with: runbook resume {record.run_id}")
        else:
            print(f"waiting:   {json.dumps(waiting, default=str)}; runbook resume {record.run_id}")
    elif status == RunStatus.INTERRUPTED:
        print(f"           the process is gone; continue with: runbook resume {record.run_id}")

    for entry in ApprovalBox.of(config.state_dir, record.run_id, Policy.of(config)).entries():
        verdict = f"refused ({entry['refused']})" if entry.get("refused") else entry["decision"]
        signed = f", signed by key {str(entry['key_id'])[:16]}" if entry.get("key_id") else ""
        bound = f", plans {str(entry['plan_sha256'])[:12]}" if entry.get("plan_sha256") else ""
        print(f"approval:  step '{entry['step']}' {verdict} by {entry['by']} via {entry['via']} at {entry['at']}"
              f"{signed}{bound}")
    if record.status != RunStatus.FINISHED:
        print(f"           or end it: runbook cancel {record.run_id} --by NAME --reason TEXT")
    return 0


def _bundle_dir(config: Any, target: str) -> Path:
    """A bundle directory given as such, or a run's (under evidence_dir, else where its run record says)."""
    from engine.runs import RunStore

    path = Path(target)
    if path.is_dir():
        return path
    if "/" in target:
        raise UsageError(f"no evidence bundle at {target} (expected a bundle directory or a run id)")
    candidate = config.evidence_dir / target
    if candidate.is_dir():
        return Path(candidate)
    return Path(RunStore(config.state_dir).load(target).evidence_dir)


def _keys(args: argparse.Namespace) -> int:
    from engine import keys

    if args.keys_command != "generate":
        raise UsageError("keys needs an action: generate")
    private, public, kid = keys.generate(args.name, Path(args.dir))
    print(f"wrote {private} (private, mode 0600: keep it secret) and {public}")
    print(f"key id {kid}")
    print(f"sign every bundle with `signing: {{key: {private}}}` in runbook.yaml; auditors verify with --key {public}")
    return 0


def _public_keys(paths: list[str]) -> list[tuple[str, Any]]:
    from engine.keys import load_public

    return [(path, load_public(Path(path))) for path in paths]


def _evidence(args: argparse.Namespace) -> int:
    if not args.evidence_command:
        raise UsageError("evidence needs an action: verify, show, report, audit or postmortem")
    config = _config(args)
    if args.evidence_command == "audit":
        from engine.ledger import audit_command

        return audit_command(config, args.since, _public_keys(args.key))
    directory = _bundle_dir(config, args.target)
    if args.evidence_command == "verify":
        from engine.ledger import verify_in_place

        try:
            verdict = verify_in_place(config, directory, _public_keys(args.key))
        except RunbookError as exc:
            if args.output == "json":
                _print_json({"bundle": str(directory), "ok": False, "exit_code": exc.exit_code, "error": str(exc)})
            raise
        if args.output == "json":
            _print_json({"bundle": str(directory), "ok": True, "exit_code": 0, "verdict": verdict})
        else:
            print(verdict)
        return 0
    if args.evidence_command == "postmortem":
        from engine.postmortem import render

        return _emit(render(directory), args.out)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8")) if (directory / "manifest.json").exists() else {}
    if args.evidence_command == "show":
        from engine.evidence import read_events

        events = read_events(directory / "events.jsonl")
        if args.output == "json":
            _print_json({"manifest": manifest, "events": events})
            return 0
        for event in events:
            print(f"{event['seq']:>5} {event['ts']} {event['type']:<18} {event.get('step') or '':<24} "
                  f"{json.dumps(event['data'], default=str, ensure_ascii=False)[:200]}")
        return 0
    from engine.report import bundle_report

    return _emit(bundle_report(directory, args.format), args.out)


def _emit(text: str, out: str | None) -> int:
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
