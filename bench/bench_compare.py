"""The same N-step workloads under chaostoolkit and ansible-playbook, in bench/.venv-compare."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from bench_util import REPO, BenchError, Sample, bench_env, per_step, repeat

VENV = REPO / "bench" / ".venv-compare"
BIN = VENV / "bin"
PACKAGES = ("chaostoolkit", "ansible-core")

# (workload, step counts): ansible forks a worker per task, and `command` ships a module to a new
# python each time (~0.3 s), so its counts are capped.
CHAOS_COUNTS = {"noop": (10, 1000), "shell": (10, 100)}
ANSIBLE_COUNTS = {"noop": (10, 100), "shell": (10, 50)}


def ensure_venv(log: Callable[[str], None]) -> dict[str, str | None]:
    """Create bench/.venv-compare and install the tools if missing; per tool, None or why it is unusable."""
    status: dict[str, str | None] = {"chaostoolkit": None, "ansible": None}
    if not (BIN / "python").exists():
        log(f"creating {VENV.relative_to(REPO)} (python -m venv) ...")
        proc = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True, check=False)
        if proc.returncode:
            why = f"venv creation failed: {proc.stderr.strip()[-300:]}"
            return {"chaostoolkit": why, "ansible": why}
    for package, tool, exe in (("chaostoolkit", "chaostoolkit", "chaos"), ("ansible-core", "ansible", "ansible-playbook")):
        if (BIN / exe).exists():
            continue
        log(f"pip install {package} into {VENV.relative_to(REPO)} ...")
        proc = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package],
                              capture_output=True, text=True, check=False)
        if proc.returncode or not (BIN / exe).exists():
            lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("WARNING: Location")]
            status[tool] = f"pip install {package} failed: {' | '.join(lines[-3:]) or 'no ' + exe}"
    return status


def tool_versions() -> dict[str, str]:
    """Installed versions of the compared tools."""
    proc = subprocess.run([str(BIN / "python"), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                          capture_output=True, text=True, check=False)
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        return {}
    return {r["name"]: r["version"] for r in rows if r["name"].lower() in ("chaostoolkit", "chaostoolkit-lib", "ansible-core")}


def _chaos_experiment(path: Path, kind: str, n: int) -> None:
    if kind == "noop":
        provider: dict[str, Any] = {"type": "python", "module": "os", "func": "getpid"}
    else:
        provider = {"type": "process", "path": "/bin/true"}
    method = [{"type": "probe", "name": f"p{i}", "provider": provider} for i in range(n)]
    path.write_text(json.dumps({"version": "1.0.0", "title": f"bench {kind} {n}", "description": "bench/engine.py",
                                "method": method}), encoding="utf-8")


def bench_chaos(work: Path, runs: int) -> dict[str, Any]:
    """`chaos run` of N python no-op probes and N process /bin/true probes."""
    work.mkdir(parents=True, exist_ok=True)
    settings = work / "settings.yaml"
    settings.write_text("{}\n", encoding="utf-8")
    env = bench_env({"HOME": str(work), "CHAOSTOOLKIT_DISABLE_VERSION_CHECK": "1"})
    out: dict[str, Any] = {}
    for kind, (small, large) in CHAOS_COUNTS.items():
        samples: dict[int, Sample] = {}
        for n in (small, large):
            exp = work / f"{kind}{n}.json"
            _chaos_experiment(exp, kind, n)
            argv = [str(BIN / "chaos"), "--no-version-check", "--no-log-file", "--settings", str(settings), "run",
                    "--journal-path", str(work / "journal.json"), str(exp)]
            samples[n] = repeat(argv, work, runs, env, warmup=1)
            journal = json.loads((work / "journal.json").read_text(encoding="utf-8"))
            if journal.get("status") != "completed" or len(journal.get("run", [])) != n:
                raise BenchError(f"chaos {kind} N={n}: status {journal.get('status')}, {len(journal.get('run', []))} probes run")
        out[kind] = {"per_step": per_step(samples[small], samples[large], small, large),
                     "runs": {str(n): s.as_dict() for n, s in samples.items()}}
    return out


def bench_ansible(work: Path, runs: int) -> dict[str, Any]:
    """`ansible-playbook` on localhost (connection local): N skipped `debug` tasks, N `command: /bin/true`."""
    work.mkdir(parents=True, exist_ok=True)
    home = work / "ansible-home"
    env = bench_env({"HOME": str(work), "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
                     "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
                     "ANSIBLE_PYTHON_INTERPRETER": str(BIN / "python"), "ANSIBLE_NOCOLOR": "1",
                     "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_GALAXY_DISABLE_GPG_VERIFY": "1"})
    tasks = {"noop": {"ansible.builtin.debug": {"msg": "noop", "verbosity": 5}},
             "shell": {"ansible.builtin.command": "/bin/true"}}
    out: dict[str, Any] = {}
    for kind, (small, large) in ANSIBLE_COUNTS.items():
        samples: dict[int, Sample] = {}
        for n in (small, large):
            book = work / f"{kind}{n}.yml"
            play = {"hosts": "localhost", "connection": "local", "gather_facts": False,
                    "tasks": [{"name": f"t{i}", **tasks[kind]} for i in range(n)]}
            book.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
            argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(book)]
            samples[n] = repeat(argv, work, runs, env, warmup=1)
        out[kind] = {"per_step": per_step(samples[small], samples[large], small, large),
                     "runs": {str(n): s.as_dict() for n, s in samples.items()}}
    return out
