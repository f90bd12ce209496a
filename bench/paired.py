"""Issue 12's figures in one run, paired with chaostoolkit: `make bench` (= python bench/paired.py).

    .venv/bin/python bench/paired.py            # every figure of the issue's table (~4-8 min, more when busy)
    .venv/bin/python bench/paired.py --quick    # fewer rounds, same figures (~2-3 min)
    .venv/bin/python bench/paired.py --json out.json

Pairing: in every round each measured command runs once, in an order that rotates from round to
round, so the engine and chaostoolkit see the same moment of the machine; a ratio is the median
of the per-round ratios (engine / chaostoolkit), not a ratio of medians taken minutes apart.

Verdicts: `python -c pass` is timed at the start and the end and compared with its value on a
quiet run of this machine (--quiet-python-ms). When it is slower by more than --busy-factor,
the machine is busy: figures are printed, but no PASS or MISS, only "no verdict (busy)".
chaostoolkit is installed by pip in bench/.venv-compare (git-ignored) if missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import (  # noqa: E402
    REPO,
    BenchError,
    bench_env,
    big_runbook,
    dir_bytes,
    new_workspace,
    noop_steps,
    shell_steps,
    spawn_floor,
    write_runbook,
)

MS = 1000.0
# A runbook holds at most 1000 steps (engine.validate.MAX_STEPS): "1000 steps" is 999 checks and the end step.
STEPS = {10: 10, 100: 100, 1000: 999}
MIB = 1024.0 * 1024.0
VENV = REPO / "bench" / ".venv-compare"
CHAOS = VENV / "bin" / "chaos"
# `python -c pass` of the engine's venv on this 2-core machine when nothing else runs (2026-11-23 quiet run).
QUIET_PYTHON_MS = 25.8


def log(message: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass
class Proc:
    """One measured command: wall seconds and peak RSS (KiB) of the process (os.wait4)."""

    seconds: float
    maxrss_kib: int


def run_proc(argv: Sequence[str], cwd: Path, env: dict[str, str], ok: Sequence[int] = (0,)) -> Proc:
    """Run a whole process; wall clock and its own peak RSS; BenchError on an unexpected exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode not in ok:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {' | '.join(tail)}")
    return Proc(elapsed, usage.ru_maxrss)


@dataclass
class Command:
    """A command of a round: argv, cwd, env, and what to do before each run (unmeasured)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    before: Callable[[], None] | None = None
    check: Callable[[], None] | None = None


def rounds(commands: dict[str, Command], count: int) -> dict[str, list[Proc]]:
    """Each command once per round (after one unmeasured warm-up round), order rotated every round."""
    names = list(commands)
    out: dict[str, list[Proc]] = {name: [] for name in names}
    for r in range(count + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            cmd = commands[name]
            if cmd.before:
                cmd.before()
            proc = run_proc(cmd.argv, cmd.cwd, cmd.env)
            if cmd.check:
                cmd.check()
            if r:
                out[name].append(proc)
        log(f"round {r}/{count}" + (" (warm-up)" if r == 0 else ""))
    return out


def med(values: Sequence[float]) -> float:
    """Median."""
    return statistics.median(values)


def seconds(procs: list[Proc]) -> list[float]:
    """Wall seconds of runs."""
    return [p.seconds for p in procs]


def ratio(ours: list[Proc], theirs: list[Proc]) -> dict[str, float]:
    """Median of the per-round ratios, with their spread."""
    per = sorted(a.seconds / b.seconds for a, b in zip(ours, theirs, strict=True))
    return {"median": med(per), "min": per[0], "max": per[-1]}


def per_step(large: list[Proc], small: list[Proc], n_large: int, n_small: int) -> dict[str, float]:
    """Seconds per step by the difference of two step counts, per round (start-up cancels out)."""
    per = sorted((a.seconds - b.seconds) / (n_large - n_small) for a, b in zip(large, small, strict=True))
    return {"median": med(per), "min": per[0], "max": per[-1]}


# -- machine ----------------------------------------------------------------------------------------


def python_pass(python: Path, ws: Path, count: int = 9) -> float:
    """Median seconds of `python -c pass` (the load probe)."""
    env = bench_env()
    run_proc([str(python), "-c", "pass"], ws, env)
    return med([run_proc([str(python), "-c", "pass"], ws, env).seconds for _ in range(count)])


def ensure_chaos() -> str | None:
    """bench/.venv-compare with chaostoolkit (pip), or why not."""
    if CHAOS.exists():
        return None
    if not (VENV / "bin" / "python").exists():
        log(f"creating {VENV.relative_to(REPO)}")
        proc = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True, check=False)
        if proc.returncode:
            return f"venv creation failed: {proc.stderr.strip()[-300:]}"
    log("pip install chaostoolkit")
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "chaostoolkit"], capture_output=True, text=True, check=False)
    if proc.returncode or not CHAOS.exists():
        return f"pip install chaostoolkit failed: {proc.stderr.strip()[-300:]}"
    return None


def chaos_version() -> str:
    """chaostoolkit / chaostoolkit-lib versions."""
    proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "list", "--format", "json",
                           "--disable-pip-version-check"], capture_output=True, text=True, check=False)
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        return "?"
    return ", ".join(f"{r['name']} {r['version']}" for r in rows if r["name"].lower().startswith("chaostoolkit"))


def chaos_command(work: Path, kind: str, n: int) -> Command:
    """`chaos run` of an experiment of N probes (python os.getpid, or process /bin/true); journal checked."""
    work.mkdir(parents=True, exist_ok=True)
    settings = work / "settings.yaml"
    settings.write_text("{}\n", encoding="utf-8")
    provider: dict[str, Any] = ({"type": "python", "module": "os", "func": "getpid"} if kind == "noop"
                                else {"type": "process", "path": "/bin/true"})
    exp = work / f"{kind}{n}.json"
    exp.write_text(json.dumps({"version": "1.0.0", "title": f"bench {kind} {n}", "description": "bench/paired.py",
                               "method": [{"type": "probe", "name": f"p{i}", "provider": provider} for i in range(n)]}),
                   encoding="utf-8")
    journal = work / f"journal-{kind}{n}.json"

    def check() -> None:
        data = json.loads(journal.read_text(encoding="utf-8"))
        if data.get("status") != "completed" or len(data.get("run", [])) != n:
            raise BenchError(f"chaos {kind} N={n}: status {data.get('status')}, {len(data.get('run', []))} probes run")

    env = bench_env({"HOME": str(work), "CHAOSTOOLKIT_DISABLE_VERSION_CHECK": "1"})
    return Command([str(CHAOS), "--no-version-check", "--no-log-file", "--settings", str(settings), "run",
                    "--journal-path", str(journal), str(exp)], work, env, check=check)


# -- figures ----------------------------------------------------------------------------------------


def engine_runs(runbook: Path, ws: Path, count: int) -> tuple[dict[str, list[Proc]], dict[str, Any]]:
    """The paired rounds: engine and chaostoolkit on shell 100 / 1000, noop 1000, first run of a new runbook."""
    env = bench_env()
    work = ws / "chaos"
    for kind, make in (("noop", noop_steps), ("shell", shell_steps)):
        for n in (10, 100, 1000):
            write_runbook(ws, f"{kind}-{n}", make(STEPS[n]))
    edits = iter(range(10**6))

    def edit_new() -> None:
        """A new (edited) runbook each time: its sha256 is unknown to the validation cache."""
        write_runbook(ws, "first-noop", [{"id": "s0", "check": "noop", "with": {"value": next(edits)}},
                                         {"id": "done", "end": "SUCCESS"}])

    edit_new()
    commands = {
        "engine shell-100": Command([str(runbook), "run", "shell-100"], ws, env),
        "chaos shell-100": chaos_command(work, "shell", 100),
        "engine shell-1000": Command([str(runbook), "run", "shell-1000"], ws, env),
        "chaos shell-1000": chaos_command(work, "shell", 1000),
        "engine noop-1000": Command([str(runbook), "run", "noop-1000"], ws, env),
        "chaos noop-1000": chaos_command(work, "noop", 1000),
        "engine noop-10": Command([str(runbook), "run", "noop-10"], ws, env),
        "engine shell-10": Command([str(runbook), "run", "shell-10"], ws, env),
        "engine first-run": Command([str(runbook), "run", "first-noop"], ws, env, before=edit_new),
        "chaos first-run": chaos_command(work, "noop", 1),
    }
    procs = rounds(commands, count)
    return procs, {name: {"median_s": med(seconds(p)), "min_s": min(seconds(p)), "runs_s": seconds(p),
                          "maxrss_mib": max(x.maxrss_kib for x in p) / 1024} for name, p in procs.items()}


def memory(runbook: Path, ws: Path, runs: int, size: int = 4096) -> dict[str, Any]:
    """Peak RSS of `runbook run` of steps each returning `size` bytes (a templated param): one runbook of
    1000 steps (the most a runbook may hold), and 10,000 steps as 10 call steps of such a runbook."""
    blob = f"params:\n  blob: {{type: string, default: {'x' * size}}}\nsteps:\n"
    for name, steps in (("mem-1000", [{"id": f"s{i}", "check": "noop", "with": {"value": "{{ params.blob }}"}}
                                      for i in range(STEPS[1000])] + [{"id": "done", "end": "SUCCESS"}]),
                        ("mem-10x1000", [{"id": f"c{i}", "call": "mem-1000"} for i in range(10)]
                         + [{"id": "done", "end": "SUCCESS"}])):
        path = write_runbook(ws, name, steps)
        if name == "mem-1000":
            path.write_text(path.read_text(encoding="utf-8").replace("\nsteps:\n", "\n" + blob, 1), encoding="utf-8")
    out: dict[str, Any] = {"result_bytes": size}
    for name, steps_run in (("mem-1000", 1000), ("mem-10x1000", 10_011)):
        procs = [run_proc([str(runbook), "run", name], ws, bench_env()) for _ in range(runs)]
        out[name] = {"steps": steps_run, "peak_rss_mib": med([p.maxrss_kib / 1024 for p in procs]),
                     "seconds": med(seconds(procs))}
    return out


def validate_10k(runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """`runbook validate` of 10 generated 1000-step runbooks (10,000 steps; a runbook holds at most 1000)."""
    paths = [big_runbook(ws, f"big-{k}", STEPS[1000] - 1) for k in range(10)]
    for path in paths:
        path.write_text(path.read_text(encoding="utf-8").replace("label", f"label{path.stem[4:]}x"), encoding="utf-8")
    argv = [str(runbook), "validate", *map(str, paths)]
    procs = [run_proc(argv, ws, bench_env()) for _ in range(runs)]
    return {"files": len(paths), "file_bytes": sum(p.stat().st_size for p in paths), "median_s": med(seconds(procs)),
            "min_s": min(seconds(procs))}


def evidence_verify(runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """`runbook evidence verify DIR` throughput: 5000 noop records and 200 shell steps each printing 256 KB."""
    line = "the quick brown fox jumps over the lazy dog 0123456789 lorem ipsum dolor sit amet\n"
    blob = ws / "blob.txt"
    blob.write_text(line * (256 * 1024 // len(line)), encoding="utf-8")
    out: dict[str, Any] = {}
    # A runbook holds at most 1000 steps: the event-heavy bundle is one noop step over 5000 items (one record each).
    each = [{"id": "each", "check": "noop", "for_each": "range(5000) | list", "with": {"value": "{{ item }}"}},
            {"id": "done", "end": "SUCCESS"}]
    for label, name, steps in (("event-heavy", "ev-noop-5000", each),
                               ("artifact-heavy", "ev-cat-200", shell_steps(200, ("/bin/cat", str(blob))))):
        write_runbook(ws, name, steps)
        folder = ws / "evidence"
        before = {p.name for p in folder.iterdir()} if folder.exists() else set()
        run_proc([str(runbook), "run", name], ws, bench_env())
        made = [p for p in folder.iterdir() if p.name not in before]
        if len(made) != 1:
            raise BenchError(f"expected one new evidence bundle, found {len(made)}")
        size = dir_bytes(made[0])
        times = seconds([run_proc([str(runbook), "evidence", "verify", str(made[0])], ws, bench_env())
                         for _ in range(runs)])
        events = sum(1 for _ in (made[0] / "events.jsonl").open("rb"))
        out[label] = {"bundle_bytes": size, "events": events, "median_s": med(times), "mb_per_s": size / 1e6 / med(times)}
    return out


# -- report -----------------------------------------------------------------------------------------


def table(fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's table: (figure, measured, target, met?)."""
    r, ps, floor = fig["ratios"], fig["per_step"], fig["spawn_floor_s"]
    first_ms = fig["runs"]["engine first-run"]["median_s"] * MS
    ev = fig["evidence"]
    rows = [
        ("100 shell steps, engine / chaostoolkit", f"{r['shell-100']['median']:.2f}", "<= 0.7", r["shell-100"]["median"] <= 0.7),
        ("1000 shell steps, engine / chaostoolkit", f"{r['shell-1000']['median']:.2f}", "<= 0.8", r["shell-1000"]["median"] <= 0.8),
        ("1000 no-op checks, engine / chaostoolkit python probes", f"{r['noop-1000']['median']:.2f}", "<= 0.6",
         r["noop-1000"]["median"] <= 0.6),
        ("first run of a new runbook, engine / chaostoolkit", f"{r['first-run']['median']:.2f} ({first_ms:.0f} ms)",
         "<= 0.8, <= 150 ms", r["first-run"]["median"] <= 0.8 and first_ms <= 150),
        ("per no-op check step, durable", f"{ps['noop']['median'] * MS:.3f} ms", "<= 0.15 ms", ps["noop"]["median"] * MS <= 0.15),
        ("per shell step (spawn floor in this run)", f"{ps['shell']['median'] * MS:.3f} ms (floor {floor * MS:.3f})",
         f"<= {(floor * MS + 0.25):.3f} ms", ps["shell"]["median"] <= floor + 0.00025),
        ("peak memory, 10,000 steps returning 4 KB each (10 calls x 1000)",
         f"{fig['memory']['mem-10x1000']['peak_rss_mib']:.0f} MiB", "<= 40 MiB", fig["memory"]["mem-10x1000"]["peak_rss_mib"] <= 40),
        ("evidence verify, event-heavy / artifact-heavy", f"{ev['event-heavy']['mb_per_s']:.0f} / {ev['artifact-heavy']['mb_per_s']:.0f} MB/s",
         ">= 150 / 500 MB/s", ev["event-heavy"]["mb_per_s"] >= 150 and ev["artifact-heavy"]["mb_per_s"] >= 500),
        ("runbook validate, 10,000 steps (10 files)", f"{fig['validate']['median_s']:.2f} s", "<= 1 s", fig["validate"]["median_s"] <= 1.0),
    ]
    return [{"figure": a, "measured": b, "target": c, "met": d} for a, b, c, d in rows]


def report(fig: dict[str, Any]) -> str:
    """The printed report."""
    m = fig["machine"]
    busy = fig["busy"]
    out = [f"runbook-engine paired benchmark (issue 12)  {m['date']}  commit {m['commit']}{' (+ uncommitted changes)' if m['dirty'] else ''}",
           f"machine: {m['cpus']} CPUs, python {m['python']}; {fig['chaostoolkit']}; {fig['rounds']} paired rounds",
           *([f"engine code imported from PYTHONPATH={m['pythonpath']} (not the working tree)"] if m.get("pythonpath") else []),
           f"load average at start {m['load_start']}, at end {m['load_end']}",
           f"python -c pass: {fig['python_pass_start_ms']:.1f} ms at start, {fig['python_pass_end_ms']:.1f} ms at end; "
           f"quiet value {fig['quiet_python_ms']:.1f} ms (busy above {fig['quiet_python_ms'] * fig['busy_factor']:.1f})"]
    if busy:
        out.append(f"MACHINE BUSY: {busy}. No verdict is given; the ratios are paired but every absolute figure is inflated.")
    out.append("")
    out.append(f"{'figure':<58} {'measured':>26}  {'target':<20} verdict")
    for row in fig["table"]:
        verdict = "no verdict (busy)" if busy else ("PASS" if row["met"] else "MISS")
        out.append(f"{row['figure']:<58} {row['measured']:>26}  {row['target']:<20} {verdict}")
    out += ["", "paired ratios engine / chaostoolkit (median of per-round ratios [min .. max]):"]
    for name, r in fig["ratios"].items():
        out.append(f"  {name:<11} {r['median']:.2f}  [{r['min']:.2f} .. {r['max']:.2f}]")
    out += ["", "whole-process wall time, median / min, and peak RSS:"]
    for name, r in fig["runs"].items():
        out.append(f"  {name:<20} {r['median_s'] * MS:9.1f} / {r['min_s'] * MS:9.1f} ms   {r['maxrss_mib']:6.1f} MiB")
    ps = fig["per_step"]
    out += ["", f"per step (N=1000 minus N=10, per round): noop {ps['noop']['median'] * MS:.3f} ms "
            f"[{ps['noop']['min'] * MS:.3f} .. {ps['noop']['max'] * MS:.3f}], shell {ps['shell']['median'] * MS:.3f} ms "
            f"[{ps['shell']['min'] * MS:.3f} .. {ps['shell']['max'] * MS:.3f}]; chaostoolkit python probe "
            f"{ps['chaos-noop']['median'] * MS:.3f} ms",
            f"spawn floor Popen(/bin/true)+communicate: {fig['spawn_floor_s'] * MS:.3f} ms",
            *[f"memory: {m['steps']} steps returning {fig['memory']['result_bytes']} B each ({name}): peak RSS "
              f"{m['peak_rss_mib']:.1f} MiB, run {m['seconds']:.1f} s" for name, m in fig["memory"].items() if name != "result_bytes"],
            f"validate 10,000 steps ({fig['validate']['files']} files, {fig['validate']['file_bytes'] / 1e6:.1f} MB): "
            f"{fig['validate']['median_s']:.2f} s "
            f"median, {fig['validate']['min_s']:.2f} s min"]
    for label, ev in fig["evidence"].items():
        out.append(f"evidence verify {label}: {ev['bundle_bytes'] / 1e6:.1f} MB, {ev['events']} events, in {ev['median_s']:.3f} s "
                   f"-> {ev['mb_per_s']:.0f} MB/s (process start-up included)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run every figure once, paired; print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 paired rounds and single runs elsewhere")
    parser.add_argument("--rounds", type=int, help="paired rounds (default 7, --quick 3)")
    parser.add_argument("--quiet-python-ms", type=float, default=QUIET_PYTHON_MS,
                        help=f"`python -c pass` on this machine when quiet (default {QUIET_PYTHON_MS})")
    parser.add_argument("--busy-factor", type=float, default=1.3, help="busy when python -c pass is this much slower")
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args(argv)
    count = args.rounds or (3 if args.quick else 7)
    runs = 1 if args.quick else 3

    venv_bin = REPO / ".venv" / "bin"
    python, runbook = venv_bin / "python", venv_bin / "runbook"
    if not runbook.exists():
        print(f"bench: {runbook} not found; run `make install` first", file=sys.stderr)
        return 2
    why = ensure_chaos()
    if why:
        print(f"bench: chaostoolkit unavailable, no paired figures: {why}", file=sys.stderr)
        return 2
    subprocess.run([str(python), "-m", "compileall", "-q", "engine", "checks", "actions", "transports"], cwd=REPO,
                   capture_output=True, check=False)
    ws = new_workspace()
    git = ["git", "-C", str(REPO)]
    fig: dict[str, Any] = {"rounds": count, "quiet_python_ms": args.quiet_python_ms, "busy_factor": args.busy_factor,
                           "chaostoolkit": chaos_version()}
    fig["machine"] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
                      "python": sys.version.split()[0],
                      "commit": subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                               check=False).stdout.strip(),
                      "dirty": bool(subprocess.run([*git, "status", "--porcelain", "--", "engine", "checks", "actions",
                                                    "transports"], capture_output=True, text=True, check=False).stdout.strip()),
                      "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                      "pythonpath": os.environ.get("PYTHONPATH", "")}
    try:
        log(f"workspace {ws}")
        fig["python_pass_start_ms"] = python_pass(python, ws) * MS
        log(f"paired rounds x{count}")
        procs, fig["runs"] = engine_runs(runbook, ws, count)
        fig["ratios"] = {name: ratio(procs[f"engine {name}"], procs[f"chaos {name}"])
                         for name in ("shell-100", "shell-1000", "noop-1000", "first-run")}
        fig["per_step"] = {"noop": per_step(procs["engine noop-1000"], procs["engine noop-10"], STEPS[1000], 10),
                           "shell": per_step(procs["engine shell-1000"], procs["engine shell-10"], STEPS[1000], 10),
                           "chaos-noop": per_step(procs["chaos noop-1000"], procs["chaos first-run"], 1000, 1)}
        log("spawn floor")
        fig["spawn_floor_s"] = spawn_floor(ws).median
        log("memory: 10,000 steps returning 4 KB")
        fig["memory"] = memory(runbook, ws, runs)
        log("validate 10,000 steps")
        fig["validate"] = validate_10k(runbook, ws, max(runs, 3))
        log("evidence verify")
        fig["evidence"] = evidence_verify(runbook, ws, max(runs, 3))
        fig["python_pass_end_ms"] = python_pass(python, ws) * MS
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)
    fig["machine"]["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    limit = args.quiet_python_ms * args.busy_factor
    slow = max(fig["python_pass_start_ms"], fig["python_pass_end_ms"])
    fig["busy"] = (f"python -c pass took {slow:.1f} ms, quiet value {args.quiet_python_ms:.1f} ms" if slow > limit else "")
    fig["table"] = table(fig)
    print(report(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
