"""`ansible.playbook` with a real ansible-playbook on an inventory of local aliases (seed 003's weekly backup)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, SimWorkspace

PLAYBOOK = str(REPO / "playbooks" / "backup-ledger-configs.yml")
LOCAL = str(REPO / "playbooks" / "hosts-local.ini")


@pytest.fixture
def sim(tmp_path: Path) -> SimWorkspace:
    """A simulated core (its ledger and configs are what each host backs up)."""
    return SimWorkspace(tmp_path)


def archives(ws: SimWorkspace) -> list[str]:
    return sorted(p.name for p in (ws.root / "hosts").rglob("*.tar.gz")) if (ws.root / "hosts").exists() else []


def test_weekly_backup_on_three_hosts(sim: SimWorkspace, ansible_path: str) -> None:
    env = {"PATH": ansible_path}
    args = ["run", "weekly-backup-hosts", "--param", f"inventory={LOCAL}", "--param", f"playbook={PLAYBOOK}",
            "--param", "week=2026-W49"]
    dry = sim.cli(*args, "--dry-run", "--output", "json", env=env)
    assert dry.code == 0, dry.text
    plan = json.loads(dry.out)["steps"]["backup"]["result"]["plan"]
    assert plan["would_change"] == ["host-a", "host-b", "host-c"] and "check_error" not in plan
    assert "--check" not in plan["argv"] and "runbook_idempotency_token" in plan["extra_vars"]
    assert archives(sim) == [], "check mode changed nothing"

    live = sim.cli(*args, "--output", "json", env=env)
    assert live.code == 0, live.text
    report = json.loads(live.out)
    result = report["steps"]["backup"]["result"]
    assert {h: c["status"] for h, c in result["hosts"].items()} == {"host-a": "changed", "host-b": "changed",
                                                                     "host-c": "changed"}
    assert archives(sim) == ["host-a.tar.gz", "host-b.tar.gz", "host-c.tar.gz"]
    record = json.loads((sim.root / "hosts/host-b/backups/2026-W49/host-b.tar.gz.json").read_text())
    assert record["token"] == f"{report['run_id']}:backup:1", "the idempotency token reached the playbook"
    assert sim.cli("evidence", "verify", report["run_id"]).code == 0
    assert "PLAY RECAP" in next((sim.root / "evidence" / report["run_id"] / "artifacts").rglob("*stdout*")).read_text()

    again = sim.cli(*args, env=env)
    assert again.code == 11, again.text  # once per week


def test_a_failing_host_fails_the_step_and_stops_the_hosts_after_it(sim: SimWorkspace, ansible_path: str) -> None:
    inventory = Path(LOCAL).read_text().replace(
        'host-b backup_root="{{ runbook_workdir }}/hosts/host-b/backups"',
        'host-b backup_root="{{ runbook_workdir }}/hosts/host-b/backups" '
        'backup_paths=\'["/nonexistent/ledger.jsonl"]\'')
    assert "nonexistent" in inventory
    sim.write("hosts.ini", inventory)
    result = sim.cli("run", "weekly-backup-hosts", "--param", "inventory=hosts.ini", "--param", f"playbook={PLAYBOOK}",
                     "--param", "week=2026-W49", "--output", "json", env={"PATH": ansible_path})
    assert result.code == 50, result.text
    report = json.loads(result.out)
    backup = report["steps"]["backup"]
    assert backup["status"] == "failed" and "host-b failed" in backup["error"]
    assert backup["result"]["failed_hosts"] == ["host-b"]
    assert "host-c" not in backup["result"]["hosts"], "serial 1 + max_fail_percentage 0: the play stopped"
    assert archives(sim) == ["host-a.tar.gz"]
    assert "weekly backup incomplete" in report["message"]


def test_per_host_recap_parsing() -> None:
    from actions.ansible import recap

    out = ("PLAY RECAP *****\n"
           "web-1                      : ok=2    changed=1    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0\n"
           "web-2                      : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0\n"
           "db-1                       : ok=1    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0\n")
    hosts = recap(out)
    assert {h: c["status"] for h, c in hosts.items()} == {"web-1": "changed", "web-2": "unreachable", "db-1": "failed"}
    assert hosts["web-1"]["ok"] == 2


def test_an_unreachable_host_is_named_and_the_others_still_run(sim: SimWorkspace, ansible_path: str) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("needs an ssh client: the unreachable host is an ssh connection to a closed port")
    local = Path(LOCAL).read_text()
    host_a = next(line for line in local.splitlines() if line.startswith("host-a "))
    group_vars = local[local.index("[trading:vars]"):]
    sim.write("hosts.ini", f"[trading]\n{host_a}\nhost-x ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1 "
              f"backup_root=/nonexistent\n\n{group_vars}")
    result = sim.cli("run", "weekly-backup-hosts", "--param", "inventory=hosts.ini", "--param", f"playbook={PLAYBOOK}",
                     "--param", "week=2026-W49", "--param", "serial=2", "--param", "max_fail_percentage=100",
                     "--output", "json", env={"PATH": ansible_path})
    assert result.code == 50, result.text
    backup = json.loads(result.out)["steps"]["backup"]
    assert backup["result"]["unreachable_hosts"] == ["host-x"] and "host-x unreachable" in backup["error"]
    assert backup["result"]["hosts"]["host-a"]["status"] == "changed"
    assert archives(sim) == ["host-a.tar.gz"]
