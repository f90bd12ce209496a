"""`ansible.playbook` action: one step acts on an inventory of hosts through `ansible-playbook`.

The plan is the playbook in check mode (`--check --diff`): what would change on which host,
nothing changed. The result is per host: ok / changed / failed / unreachable, read from the
PLAY RECAP. Any failed or unreachable host fails the step, which is then routed like any
failed step. The idempotency token, run id, step id and working directory reach the playbook
as extra vars (`runbook_idempotency_token`, `runbook_run_id`, `runbook_step_id`,
`runbook_workdir`), and so do `serial` and
`max_fail_percentage` (`runbook_serial`, `runbook_max_fail_percentage`), which the play uses
as `serial: "{{ runbook_serial | default(0) }}"`: Ansible has no command-line flag for them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext
from transports.process import hidden_env, run_command
from transports.util import effective_timeout

_RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
MAX_DIFF_CHARS = 100_000


def recap(stdout: str) -> dict[str, dict[str, Any]]:
    """Per-host counts from the PLAY RECAP of `ansible-playbook`, with a `status` per host."""
    hosts: dict[str, dict[str, Any]] = {}
    lines = stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    except ValueError:
        return hosts
    for line in lines[start + 1:]:
        match = _RECAP.match(line.strip())
        if not match:
            continue
        counts = {k: int(v) for k, v in (pair.split("=") for pair in match["counts"].split())}
        status = ("unreachable" if counts.get("unreachable") else "failed" if counts.get("failed")
                  else "changed" if counts.get("changed") else "ok")
        hosts[match["host"]] = {**counts, "status": status}
    return hosts


def _extra_vars(params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
    extra = dict(params.get("extra_vars") or {})
    extra.update(runbook_idempotency_token=ctx.idempotency_token, runbook_run_id=ctx.run_id,
                 runbook_step_id=ctx.step_id, runbook_workdir=str(ctx.workdir))
    if "serial" in params:
        extra["runbook_serial"] = params["serial"]
    if "max_fail_percentage" in params:
        extra["runbook_max_fail_percentage"] = params["max_fail_percentage"]
    return extra


def _argv(params: Mapping[str, Any], ctx: StepContext, vars_file: str, check: bool) -> list[str]:
    argv = [str(params.get("ansible_playbook", "ansible-playbook"))]
    if "inventory" in params:
        inventory = str(params["inventory"])
        argv += ["-i", inventory if "," in inventory else str(ctx.resolve(inventory))]
    if "limit" in params:
        argv += ["--limit", str(params["limit"])]
    if params.get("tags"):
        argv += ["--tags", ",".join(params["tags"])]
    argv += ["-e", f"@{vars_file}"]
    if check:
        argv += ["--check", "--diff"]
    return argv + [str(ctx.resolve(params["playbook"]))]


def run_playbook(params: Mapping[str, Any], ctx: StepContext, *, check: bool) -> dict[str, Any]:
    """Run the playbook (in check mode with `check`); the result with per-host statuses."""
    with tempfile.TemporaryDirectory(prefix="runbook-ansible-") as tmp:
        vars_file = os.path.join(tmp, "extra_vars.json")
        with open(vars_file, "w", encoding="utf-8") as handle:
            json.dump(_extra_vars(params, ctx), handle)
        argv = _argv(params, ctx, vars_file, check)
        env = {"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_RETRY_FILES_ENABLED": "0",
               "ANSIBLE_STDOUT_CALLBACK": "default", "PYTHONUNBUFFERED": "1",
               **{k: str(v) for k, v in (params.get("env") or {}).items()}}
        result = run_command(argv, cwd=str(ctx.resolve(params.get("cwd", "."))), env=env,
                             timeout=effective_timeout(params, ctx, None), unset=hidden_env(ctx))
    result["argv"] = [a if not a.startswith("@") else "@extra_vars.json" for a in result["argv"]]
    hosts = recap(result["stdout"])
    result.update(
        check=check,
        hosts=hosts,
        changed_hosts=sorted(h for h, c in hosts.items() if c.get("changed")),
        failed_hosts=sorted(h for h, c in hosts.items() if c["status"] == "failed"),
        unreachable_hosts=sorted(h for h, c in hosts.items() if c["status"] == "unreachable"),
    )
    result["ok"] = result["exit_code"] == 0 and not result["failed_hosts"] and not result["unreachable_hosts"]
    if not hosts and result["exit_code"] != 0:
        last = (result["stderr"].strip() or result["stdout"].strip()).splitlines()[-1:] or ["no output"]
        raise PluginError(f"ansible-playbook {params['playbook']} exited {result['exit_code']} before any host "
                          f"ran: {last[0][:300]}", result=result)
    if not result["ok"]:
        bad = [f"{h} {hosts[h]['status']}" for h in result["failed_hosts"] + result["unreachable_hosts"]]
        raise PluginError(f"ansible-playbook {params['playbook']}: {', '.join(bad) or 'exit ' + str(result['exit_code'])}",
                          result=result)
    return result


class AnsiblePlaybook:
    """Run an Ansible playbook against an inventory; `ok` when no host failed or was unreachable."""

    name: ClassVar[str] = "ansible.playbook"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["playbook"],
        "properties": {
            "playbook": {"type": "string", "minLength": 1, "description": "Playbook file, relative to the workdir."},
            "inventory": {"type": "string", "minLength": 1,
                          "description": "Inventory file (relative to the workdir), or hosts separated by commas."},
            "limit": {"type": "string", "description": "`--limit`: a host pattern."},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "`--tags`."},
            "extra_vars": {"type": "object", "description": "Extra vars (passed in a file, not on the command line)."},
            "serial": {"type": ["integer", "string"],
                       "description": "Batch size (or '30%'), as extra var runbook_serial for the play's `serial:`."},
            "max_fail_percentage": {"type": "number", "minimum": 0, "maximum": 100,
                                    "description": "As extra var runbook_max_fail_percentage for the play."},
            "cwd": {"type": "string", "description": "Working directory (ansible.cfg is read from here). Default: workdir."},
            "env": {"type": "object", "additionalProperties": {"type": ["string", "number"]},
                    "description": "Extra environment, e.g. ANSIBLE_CONFIG."},
            "timeout": {"type": "number", "exclusiveMinimum": 0,
                        "description": "Seconds before the run is killed; the step timeout also applies."},
            "ansible_playbook": {"type": "string", "description": "The executable. Default ansible-playbook (PATH)."},
            "verify_check": {"type": "boolean",
                             "description": "After a crash, verify with a check-mode run: nothing left to change = "
                                            "done. Only for playbooks whose every task supports check mode. Default false."},
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: argv, exit_code, stdout, stderr, hosts {host: {ok, changed, failed, unreachable, ..., status}},
        changed_hosts, failed_hosts, unreachable_hosts, ok, duration_s."""
        return run_playbook(params, ctx, check=False)

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The command, the extra vars and a check-mode run (`--check --diff`): per-host changes, nothing changed."""
        with tempfile.TemporaryDirectory() as tmp:
            argv = _argv(params, ctx, os.path.join(tmp, "extra_vars.json"), check=False)
        argv = [a if not a.startswith("@") else "@extra_vars.json" for a in argv]
        details: dict[str, Any] = {"argv": argv, "extra_vars": _extra_vars(params, ctx)}
        try:
            checked = run_playbook(params, ctx, check=True)
        except PluginError as exc:
            checked = exc.result or {}
            details["check_error"] = str(exc)
        details.update(check_hosts=checked.get("hosts", {}), would_change=checked.get("changed_hosts", []),
                       diff=str(checked.get("stdout", ""))[:MAX_DIFF_CHARS])
        hosts = checked.get("hosts", {})
        summary = (f"run {shlex.join(argv)}: check mode on {len(hosts)} host(s), "
                   f"{len(checked.get('changed_hosts', []))} would change")
        if details.get("check_error"):
            summary += f" (check mode failed: {details['check_error'][:200]})"
        return Plan(summary, details)

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """With `verify_check`: a check-mode run that changes nothing and fails nowhere = True; changes = False."""
        if not params.get("verify_check"):
            return None
        try:
            checked = run_playbook(params, ctx, check=True)
        except PluginError:
            return None
        return not checked["changed_hosts"]
