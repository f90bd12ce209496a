"""Record what an operator sees at a terminal: two sessions in tmux, saved as text screens in docs/terminal/.

`lock-stuck` (seed 000's stale lock) dry-run then live up to its four-eyes approval, and
`config-change --step` (step previews with the plan's diff, the approval prompt, a refused
approver who pauses the run, `runbook approve` by someone else, the resume with its wait).
Run: .venv/bin/python scripts/record_terminal.py (needs tmux).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = REPO / "docs" / "terminal"


class Terminal:
    """One tmux session, 110x45, in a workspace; type lines, wait for text, save the screen."""

    def __init__(self, name: str, cwd: Path) -> None:
        self.name = name
        env = f"PATH={BIN}:{os.environ.get('PATH', '')} RUNBOOK_OPERATOR=oncall-bob TERM=xterm-256color"
        subprocess.run(["tmux", "kill-session", "-t", name], check=False, capture_output=True)
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "110", "-y", "45", "-c", str(cwd),
                        f"env {env} bash --norc --noprofile"], check=True)
        self.type("PS1='$ '; clear")

    def type(self, text: str, enter: bool = True) -> None:
        """Type a line (and Enter)."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        if enter:
            subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def screen(self) -> str:
        """The whole scrollback as text."""
        return subprocess.run(["tmux", "capture-pane", "-p", "-S", "-400", "-t", self.name], check=True,
                              capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 60, times: int = 1) -> None:
        """Until `text` shows on the screen (`times` times)."""
        deadline = time.monotonic() + timeout
        while self.screen().count(text) < times:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: '{text}' never showed:\n{self.screen()}")
            time.sleep(0.1)

    def save(self, file: str) -> None:
        """Write the screen to docs/terminal/FILE and close the session."""
        OUT.mkdir(parents=True, exist_ok=True)
        lines = [line.rstrip() for line in self.screen().splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        (OUT / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


def workspace() -> Path:
    """A fresh simulated core and a runbook.yaml that uses the repository's library."""
    ws = Path(tempfile.mkdtemp(prefix="runbook-terminal-"))
    subprocess.run([str(BIN / "simcore"), "init", "core", "--seed", "7"], cwd=ws, check=True, capture_output=True)
    (ws / "runbook.yaml").write_text(f"runbook_paths: [{REPO / 'runbooks'}]\ncore: {{adapter: sim, root: core}}\n"
                                     "kill_switch: core/KILL_SWITCH\n", encoding="utf-8")
    return ws


def lock_stuck() -> None:
    ws = workspace()
    subprocess.run([str(BIN / "simcore"), "--root", "core", "inject", "stale_lock"], cwd=ws, check=True,
                   capture_output=True)
    term = Terminal("lock-stuck", ws)
    profile = REPO / "profiles" / "xauusd-sim.yaml"
    term.type(f"runbook run lock-stuck --dry-run --params-file {profile}")
    term.wait_for("recap:")
    term.type(f"runbook run lock-stuck --params-file {profile}")
    term.wait_for("approver name")
    term.type("oncall-bob")
    term.wait_for("end it: runbook cancel")
    term.type("runbook runs")
    term.wait_for("lock-stuck", timeout=10)
    term.save("lock-stuck.txt")
    shutil.rmtree(ws, ignore_errors=True)


def config_change() -> None:
    ws = workspace()
    settings = ws / "core" / "config" / "settings.yaml"
    proposed = settings.with_name("settings.proposed.yaml")
    proposed.write_text(settings.read_text().replace("filters_enabled: true", "filters_enabled: false"))
    term = Terminal("config-change", ws)
    term.type("runbook run config-change --step")
    for _ in range(5):
        term.wait_for("[r/s/a/d]")
        term.type("r")
        time.sleep(0.3)
    term.wait_for("approver name")
    term.type("oncall-bob")
    term.wait_for("end it: runbook cancel")
    run_id = sorted(p for p in (ws / "evidence").iterdir() if p.is_dir())[-1].name
    term.type(f"runbook approve {run_id} second_pair_of_eyes --by alice --note 'diff checked'")
    term.wait_for("approved step")
    term.type(f"runbook resume {run_id}")
    term.wait_for("recap:", timeout=120, times=2)
    term.save("config-change-step.txt")
    shutil.rmtree(ws, ignore_errors=True)


def main() -> int:
    """Record both sessions."""
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed")
    lock_stuck()
    config_change()
    print(f"screens written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
