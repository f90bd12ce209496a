"""Paired CPU time of one engine command under two engine trees (before/after a change).

    .venv/bin/python bench/pair_trees.py BEFORE_REV AFTER_REV [--rounds 7] [--fresh DIR] -- ARGS...

Each revision is exported with `git archive` (a path to a directory holding `engine/` is used as it
is) and put first on PYTHONPATH; `python -m engine.cli ARGS...` runs in the current directory,
alternately under each tree, the order swapped every round. Prints the median of the per-round
ratios after/before of CPU time (user + system of the child, from os.wait4: steadier than wall time
on a loaded machine), their range, and the medians of CPU and wall time. `--fresh DIR` deletes DIR
before every run (for example the state directory). Validation proofs live in each tree's
`engine/__pycache__` and are named by the file's sha256: first runs need a runbook that changes between runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"


def tree(rev: str, into: Path) -> Path:
    """A directory holding the engine of `rev` (a git revision, or a directory that has `engine/`)."""
    if (Path(rev) / "engine").is_dir():
        return Path(rev)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "engine"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def once(root: Path, args: list[str], fresh: str | None) -> tuple[float, float]:
    """CPU seconds and wall seconds of one run of the command under `root`."""
    if fresh:
        shutil.rmtree(fresh, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_CONFIG"}
    env.update(PYTHONPATH=str(root), NO_COLOR="1", TERM="dumb", RUNBOOK_OPERATOR="bench")
    start = time.perf_counter()
    proc = subprocess.Popen([str(PYTHON), "-m", "engine.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def median(values: list[float]) -> float:
    """The middle value (the upper one of an even count)."""
    return sorted(values)[len(values) // 2]


def main(argv: list[str] | None = None) -> int:
    """Run the pairs and print the figures."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fresh", metavar="DIR")
    opts = parser.parse_args(argv[:split])
    args = argv[split + 1:]
    with tempfile.TemporaryDirectory(prefix="pair-trees-") as tmp:
        roots = [tree(opts.before, Path(tmp) / "before"), tree(opts.after, Path(tmp) / "after")]
        for root in roots:
            once(root, args, opts.fresh)
        cpu: list[list[float]] = [[], []]
        wall: list[list[float]] = [[], []]
        ratios: list[float] = []
        for n in range(opts.rounds):
            order = [0, 1] if n % 2 == 0 else [1, 0]
            for side in order:
                used, took = once(roots[side], args, opts.fresh)
                cpu[side].append(used)
                wall[side].append(took)
            ratios.append(cpu[1][-1] / cpu[0][-1])
    print(f"CPU {median(cpu[0]) * 1e3:.0f} -> {median(cpu[1]) * 1e3:.0f} ms, after/before {median(ratios):.2f} "
          f"[{min(ratios):.2f} .. {max(ratios):.2f}], {opts.rounds} rounds; wall {median(wall[0]) * 1e3:.0f} -> "
          f"{median(wall[1]) * 1e3:.0f} ms; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
