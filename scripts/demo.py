"""`make demo`: a stale-lock incident on the simulated trading core, triaged by a runbook.

Creates a workspace with a fresh simulated core, injects a stale meta-cycle lock (seed 000
§4B), runs the `lock-stuck` runbook as a dry-run, then live: it pauses for a four-eyes
approval, a second person approves, the run resumes and breaks the lock with one protected
cycle. Finally the evidence bundle is verified and its report shown. The workspace is kept
so that everything can be inspected afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROFILE = REPO / "profiles" / "xauusd-sim.yaml"


def say(text: str) -> None:
    """A headline between commands."""
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def sh(*argv: str, cwd: Path, expect: int | None = 0, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Show a command, run it, show its output; stop the demo if the exit code is not the expected one."""
    shown = " ".join(argv)
    print(f"$ {shown}", flush=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RUNBOOK_OPERATOR": "oncall-bob"}
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, env=env)
    if not quiet:
        sys.stdout.write(proc.stdout)
        sys.stdout.write(proc.stderr)
    print(f"[exit {proc.returncode}]", flush=True)
    if expect is not None and proc.returncode != expect:
        sys.exit(f"demo stopped: `{shown}` exited {proc.returncode}, expected {expect}")
    return proc


def main() -> int:
    """Run the demo; exit 0 when every step behaved as described."""
    ws = Path(tempfile.mkdtemp(prefix="runbook-demo-"))
    say(f"workspace {ws}: a simulated XAUUSD trading core in core/")
    sh("simcore", "init", "core", "--seed", "7", cwd=ws)
    (ws / "runbook.yaml").write_text(
        f"runbook_paths: [{REPO / 'runbooks'}]\ncore: {{adapter: sim, root: core}}\nkill_switch: core/KILL_SWITCH\n")

    say("incident: the meta-cycle lock is stuck (its owner process died)")
    sh("simcore", "--root", "core", "inject", "stale_lock", cwd=ws)
    print((ws / "core/data/meta_states/.locks/meta_cycle.lock").read_text())

    say("dry-run: checks run for real, actions are only planned")
    before = _tree_hash(ws / "core")
    sh("runbook", "run", "lock-stuck", "--dry-run", "--params-file", str(PROFILE), cwd=ws)
    print("core state unchanged by the dry-run:", _tree_hash(ws / "core") == before)

    say("live, unattended (--no-input): the run pauses at the four-eyes approval")
    sh("runbook", "run", "lock-stuck", "--no-input", "--params-file", str(PROFILE), cwd=ws, expect=12)
    runs = json.loads(sh("runbook", "runs", "--output", "json", cwd=ws, quiet=True).stdout)
    run_id = [r for r in runs if r["runbook"] == "lock-stuck" and r["mode"] == "live"][-1]["run_id"]
    sh("runbook", "status", run_id, cwd=ws)

    say("the operator who started the run may not approve it; a second person does")
    waiting = json.loads(sh("runbook", "status", run_id, "--output", "json", cwd=ws, quiet=True).stdout)["waiting_for"]
    sh("runbook", "approve", run_id, waiting["step"], "--by", "oncall-bob", cwd=ws, expect=2)
    sh("runbook", "approve", run_id, waiting["step"], "--by", "alice", "--note", "owner pid is dead; break it",
       cwd=ws)
    sh("runbook", "resume", run_id, cwd=ws)

    say("the core afterwards: lock released, one protected cycle logged")
    print((ws / "core/data/meta_states/.locks/meta_cycle.lock").read_text()
          if (ws / "core/data/meta_states/.locks/meta_cycle.lock").exists() else "(no lock file)")

    say("evidence: verify the hash chain and every file, then read the report")
    evidence = ws / "evidence" / run_id
    sh("runbook", "evidence", "verify", run_id, cwd=ws)
    report = (evidence / "report.md").read_text().splitlines()
    print("\n".join(report[:40]))
    print(f"... ({len(report)} lines) {evidence / 'report.md'}")
    say(f"done. Evidence bundle: {evidence}")
    return 0


def _tree_hash(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".flock")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
