"""Benchmark of the runbook engine, measured as whole processes (wall clock, median and min of N runs).

    .venv/bin/python bench/engine.py                 # engine figures and targets (~2 min)
    .venv/bin/python bench/engine.py --compare       # + chaostoolkit / ansible-playbook (a few more minutes)
    .venv/bin/python bench/engine.py --profile       # + cProfile top entries of `runbook run` (N=1000 noop)
    .venv/bin/python bench/engine.py --json out.json # all figures as JSON

Per-step overhead is (t(N=1000) - t(N=10)) / 990 so process start-up cancels out. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import (  # noqa: E402
    REPO,
    BenchError,
    Sample,
    bench_env,
    big_runbook,
    dir_bytes,
    fsync_cost,
    new_workspace,
    noop_steps,
    per_step,
    repeat,
    shell_steps,
    spawn_floor,
    write_runbook,
)

MS = 1000.0
COUNTS = (10, 100, 1000)


def log(message: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def tools() -> tuple[Path, Path]:
    """The engine's venv python and its `runbook` script."""
    venv_bin = REPO / ".venv" / "bin"
    return venv_bin / "python", venv_bin / "runbook"


def compile_package(python: Path) -> str:
    """`python -m compileall -q engine checks actions`, as the install step does (PYTHONDONTWRITEBYTECODE may be set)."""
    proc = subprocess.run([str(python), "-m", "compileall", "-q", "engine", "checks", "actions"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    return "ok" if proc.returncode == 0 else f"failed ({proc.returncode}): {proc.stdout[-200:]}{proc.stderr[-200:]}"


def machine_info(python: Path, workspace: Path) -> dict[str, Any]:
    """CPU, python, OS, commit, and the cost of one fsync on the workspace's filesystem."""
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=False).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "host": platform.node(),
            "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": model, "os": platform.platform(), "python": version, "commit": commit,
            "workspace": str(workspace.parent), "fsync_ms": fsync_cost(workspace) * MS,
            "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""), "loadavg_start": os.getloadavg()}


def new_evidence_dir(workspace: Path, before: set[str]) -> Path:
    """The one evidence bundle created since `before` was listed."""
    made = sorted(p for p in (workspace / "evidence").iterdir() if p.name not in before)
    if len(made) != 1:
        raise BenchError(f"expected one new evidence bundle, found {len(made)}")
    return made[0]


def listing(workspace: Path) -> set[str]:
    """Names in workspace/evidence."""
    folder = workspace / "evidence"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# -- measurements ----------------------------------------------------------------------------------


def bench_startup(python: Path, runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """`python -c pass`, `runbook --help`, `runbook validate` on the repo's library."""
    out: dict[str, Any] = {}
    out["python_bare"] = repeat([str(python), "-c", "pass"], ws, runs, warmup=1).as_dict()
    out["help"] = repeat([str(runbook), "--help"], ws, runs, warmup=1).as_dict()
    proc = subprocess.run([str(runbook), "validate"], cwd=REPO, env=bench_env(), capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    out["validate_library"] = {**repeat([str(runbook), "validate"], REPO, runs, ok=(proc.returncode,), warmup=1).as_dict(),
                               "exit_code": proc.returncode, "summary": lines[-1] if lines else ""}
    return out


def bench_one_step(runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """A one-step runbook (noop, and shell /bin/true): first run (validation cache empty) and cold process with warm cache."""
    steps = {"one-noop": noop_steps(1), "one-shell": shell_steps(1)}
    for name, listed in steps.items():
        write_runbook(ws, name, listed)
    edits = iter(range(10**6))

    out: dict[str, Any] = {}
    for name in ("one-noop", "one-shell"):
        argv = [str(runbook), "run", name]

        def edit(name: str = name) -> None:
            """A title never seen before: the file's sha256 is unknown to the engine's validation proofs."""
            write_runbook(ws, name, steps[name], title=f"Benchmark {name} {next(edits)}")

        first = repeat(argv, ws, runs, before=edit)
        write_runbook(ws, name, steps[name])
        warm = repeat(argv, ws, runs, warmup=1)
        out[name] = {"first_run": first.as_dict(), "cold_warm_cache": warm.as_dict()}
    return out


def bench_steps(runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """N = 10, 100, 1000 noop checks and shell /bin/true checks; per-step overhead by differences."""
    out: dict[str, Any] = {}
    for kind, make in (("noop", noop_steps), ("shell", shell_steps)):
        samples: dict[int, Sample] = {}
        for n in COUNTS:
            name = f"{kind}-{n}"
            write_runbook(ws, name, make(n))
            log(f"runbook run {name} x{runs}")
            samples[n] = repeat([str(runbook), "run", name], ws, runs, warmup=1)
        out[kind] = {"runs": {str(n): s.as_dict() for n, s in samples.items()},
                     "per_step_10_100": per_step(samples[10], samples[100], 10, 100),
                     "per_step_10_1000": per_step(samples[10], samples[1000], 10, 1000)}
    return out


def bench_validate_big(runbook: Path, ws: Path, runs: int, n: int = 10_000) -> dict[str, Any]:
    """`runbook validate FILE` of a generated N-step runbook (noop chain with decides, gotos, on_fail)."""
    path = big_runbook(ws, f"big-{n}", n)
    argv = [str(runbook), "validate", str(path)]
    proc = subprocess.run(argv, cwd=ws, env=bench_env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise BenchError(f"generated {n}-step runbook does not validate: {proc.stderr.strip()[-500:]}")
    sample = repeat(argv, ws, runs)
    return {"steps": n, "file_bytes": path.stat().st_size, **sample.as_dict()}


def bench_evidence(runbook: Path, ws: Path, runs: int) -> dict[str, Any]:
    """`runbook evidence verify DIR` throughput on an event-heavy and an artifact-heavy bundle."""
    line = "the quick brown fox jumps over the lazy dog 0123456789 lorem ipsum dolor sit amet\n"
    blob = ws / "blob.txt"
    blob.write_text(line * (256 * 1024 // len(line)), encoding="utf-8")
    bundles = {"events_5000_noop": ("ev-noop-5000", noop_steps(5000)),
               "artifacts_200x256KB": ("ev-cat-200", shell_steps(200, ("/bin/cat", str(blob))))}
    out: dict[str, Any] = {}
    for label, (name, steps) in bundles.items():
        write_runbook(ws, name, steps)
        before = listing(ws)
        log(f"runbook run {name} (bundle for verify)")
        run_s = repeat([str(runbook), "run", name], ws, 1).median
        bundle = new_evidence_dir(ws, before)
        size = dir_bytes(bundle)
        events = sum(1 for _ in (bundle / "events.jsonl").open("rb"))
        sample = repeat([str(runbook), "evidence", "verify", str(bundle)], ws, runs, warmup=1)
        out[label] = {"bundle_bytes": size, "events": events, "run_s": run_s, **sample.as_dict(),
                      "mb_per_s": size / 1e6 / sample.median, "mb_per_s_best": size / 1e6 / sample.min}
    return out


def bare_loop(ws: Path, n: int = 1000, runs: int = 5) -> dict[str, Any]:
    """The floor: YAML load (C loader, as the engine) of an N-step file, then per step a sandboxed Jinja
    render (template compiled once) + canonical JSON + sha256 chain + write + fsync."""
    import yaml
    from jinja2.sandbox import SandboxedEnvironment

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = write_runbook(ws, "bare-loop", [{"id": f"s{i}", "check": "noop", "with": {"value": "{{ params.x }}"}}
                                           for i in range(n)])
    total, loop = [], []
    for _ in range(runs):
        log_path = ws / "bare-events.jsonl"
        start = time.perf_counter()
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        env = SandboxedEnvironment()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        prev = "0" * 64
        compiled: dict[str, Any] = {}
        loop_start = time.perf_counter()
        for seq, step in enumerate(doc["steps"], start=1):
            source = step["with"]["value"]
            if source not in compiled:
                compiled[source] = env.from_string(source)
            value = compiled[source].render(params={"x": seq})
            record = {"seq": seq, "ts": dt.datetime.now(dt.UTC).isoformat(), "type": "step_finished", "step": step["id"],
                      "data": {"status": "ok", "result": {"value": value}}, "prev": prev}
            body = json.dumps(record, sort_keys=True, separators=(",", ":"))
            prev = hashlib.sha256(body.encode()).hexdigest()
            os.write(fd, (body[:-1] + f',"hash":"{prev}"}}\n').encode())
            os.fsync(fd)
        end = time.perf_counter()
        os.close(fd)
        total.append((end - start) / n)
        loop.append((end - loop_start) / n)
        log_path.unlink()
    t, lp = Sample(total), Sample(loop)
    return {"steps": n, "per_step_median_s": t.median, "per_step_min_s": t.min,
            "loop_only_median_s": lp.median, "loop_only_min_s": lp.min}


PROFILES = {"run noop-1000": ["run", "noop-1000"], "run shell-1000": ["run", "shell-1000"],
            "validate big-10000": ["validate", "runbooks/big-10000.yaml"]}


def spawn_figures(ws: Path, n: int = 300, runs: int = 5) -> dict[str, Any]:
    """The spawn floor (bench_util.spawn_floor) as JSON-ready figures."""
    sample = spawn_floor(ws, n, runs)
    return {"spawns": n, "per_spawn_median_s": sample.median, "per_spawn_min_s": sample.min}


def profile_cmd(python: Path, runbook: Path, ws: Path, args: list[str], top: int = 25) -> str:
    """`python -m cProfile -s tottime runbook ARGS`: the top entries."""
    proc = subprocess.run([str(python), "-m", "cProfile", "-s", "tottime", str(runbook), *args], cwd=ws,
                          env=bench_env(), capture_output=True, text=True, check=False)
    lines = proc.stdout.splitlines()
    for i, text in enumerate(lines):
        if text.strip().startswith("ncalls"):
            header = [ln.strip() for ln in lines[max(0, i - 4):i] if "function calls" in ln]
            return "\n".join(header + lines[i:i + top + 1])
    return proc.stdout[-3000:] + proc.stderr[-1000:]


# -- report ----------------------------------------------------------------------------------------


def targets(fig: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(what, target, measured median, unit) for each target of the issue."""
    rows = [
        ("overhead per noop check step (N=10..1000, event log fsynced)", 0.3,
         fig["steps"]["noop"]["per_step_10_1000"]["median_s"] * MS, "ms"),
        ("overhead per shell /bin/true step (N=10..1000)", 0.6,
         fig["steps"]["shell"]["per_step_10_1000"]["median_s"] * MS, "ms"),
        ("runbook run, one noop step, cold process (validation cached)", 150,
         fig["one_step"]["one-noop"]["cold_warm_cache"]["median_s"] * MS, "ms"),
        ("runbook run, one shell step, cold process (validation cached)", 150,
         fig["one_step"]["one-shell"]["cold_warm_cache"]["median_s"] * MS, "ms"),
        ("runbook --help", 80, fig["startup"]["help"]["median_s"] * MS, "ms"),
        ("runbook validate, generated 10,000-step runbook", 2.0, fig["validate_big"]["median_s"], "s"),
    ]
    return rows


def report(fig: dict[str, Any]) -> str:
    """The human-readable report."""
    m = fig["machine"]
    out = [f"runbook-engine benchmark  {m['date']}  commit {m['commit']}",
           f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['os']}, python {m['python']}",
           f"fsync (200-byte append) on the workspace filesystem: {m['fsync_ms']:.3f} ms median",
           "load average (1/5/15 min) at start {} and end {}; figures are only meaningful on a quiet machine".format(
               "/".join(f"{x:.1f}" for x in m["loadavg_start"]), "/".join(f"{x:.1f}" for x in m["loadavg_end"])),
           f"compileall engine checks actions before measuring: {fig['compileall']}; "
           f"runs per figure: {fig['runs']} (median / min)", ""]
    out.append(f"{'target':<64} {'goal':>8} {'median':>9} {'min':>9}  result")
    mins = {
        "overhead per noop check step (N=10..1000, event log fsynced)": fig["steps"]["noop"]["per_step_10_1000"]["min_s"] * MS,
        "overhead per shell /bin/true step (N=10..1000)": fig["steps"]["shell"]["per_step_10_1000"]["min_s"] * MS,
        "runbook run, one noop step, cold process (validation cached)": fig["one_step"]["one-noop"]["cold_warm_cache"]["min_s"] * MS,
        "runbook run, one shell step, cold process (validation cached)": fig["one_step"]["one-shell"]["cold_warm_cache"]["min_s"] * MS,
        "runbook --help": fig["startup"]["help"]["min_s"] * MS,
        "runbook validate, generated 10,000-step runbook": fig["validate_big"]["min_s"],
    }
    for what, goal, value, unit in targets(fig):
        verdict = "PASS" if value <= goal else "MISS"
        out.append(f"{what:<64} {goal:>6g}{unit:<2} {value:>7.3f}{unit:<2} {mins[what]:>7.3f}{unit:<2}  {verdict}")
    s, o, st = fig["startup"], fig["one_step"], fig["steps"]
    out += ["", "other figures (median / min):",
            f"  python -c pass                               {s['python_bare']['median_s'] * MS:8.1f} / {s['python_bare']['min_s'] * MS:.1f} ms",
            f"  runbook validate (repo library, cwd=repo)    {s['validate_library']['median_s'] * MS:8.1f} / {s['validate_library']['min_s'] * MS:.1f} ms"
            f"   [exit {s['validate_library']['exit_code']}: {s['validate_library']['summary']}]"]
    for name in ("one-noop", "one-shell"):
        first = o[name]["first_run"]
        out.append(f"  runbook run {name:<9} first run (empty cache) {first['median_s'] * MS:8.1f} / {first['min_s'] * MS:.1f} ms")
    for kind in ("noop", "shell"):
        runs = st[kind]["runs"]
        totals = "  ".join(f"N={n}: {runs[str(n)]['median_s']:.3f}s" for n in COUNTS)
        p100 = st[kind]["per_step_10_100"]
        out.append(f"  {kind:<5} run totals  {totals}   per step N=10..100: {p100['median_s'] * MS:.3f} ms")
    b = fig["bare_loop"]
    out.append(f"  bare loop floor (load+render+sha256+fsync)   {b['per_step_median_s'] * MS:8.3f} / {b['per_step_min_s'] * MS:.3f} ms/step"
               f"  (per-step loop without load {b['loop_only_median_s'] * MS:.3f} / {b['loop_only_min_s'] * MS:.3f})")
    sp = fig["spawn_floor"]
    out.append(f"  spawn floor: Popen(/bin/true)+communicate    {sp['per_spawn_median_s'] * MS:8.3f} / {sp['per_spawn_min_s'] * MS:.3f} ms")
    vb = fig["validate_big"]
    out.append(f"  validate {vb['steps']}-step file ({vb['file_bytes'] / 1e6:.1f} MB)        {vb['median_s']:8.3f} / {vb['min_s']:.3f} s")
    for label, ev in fig["evidence"].items():
        out.append(f"  evidence verify {label:<22} {ev['bundle_bytes'] / 1e6:6.1f} MB, {ev['events']} events: "
                   f"{ev['median_s']:.3f} s -> {ev['mb_per_s']:.1f} MB/s (best {ev['mb_per_s_best']:.1f})")
    if "compare" in fig:
        out += ["", "comparison: seconds per step (difference of two N), ratio = tool / runbook-engine"]
        for tool, res in fig["compare"].items():
            if isinstance(res, str):
                out.append(f"  {tool:<13} skipped: {res}")
                continue
            for kind in ("noop", "shell"):
                ps = res[kind]["per_step"]
                ours = st[kind]["per_step_10_1000"]["median_s"]
                t_small = res[kind]["runs"][str(ps["n_small"])]["median_s"]
                out.append(f"  {tool:<13} {kind:<5} N={ps['n_small']}..{ps['n_large']:<5} {ps['median_s'] * MS:9.3f} ms/step "
                           f"(runbook {ours * MS:.3f})  ratio {ps['median_s'] / ours:6.1f}x   whole run N={ps['n_small']}: {t_small:.3f}s")
        if fig.get("compare_versions"):
            out.append("  versions: " + ", ".join(f"{k} {v}" for k, v in fig["compare_versions"].items()))
    if fig.get("profile"):
        for label, text in fig["profile"].items():
            out += ["", f"cProfile -s tottime: runbook {label}", text]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure (default 5)")
    parser.add_argument("--compare", action="store_true", help="also time chaostoolkit and ansible-playbook")
    parser.add_argument("--compare-runs", type=int, default=3, help="runs per comparison figure (default 3)")
    parser.add_argument("--profile", action="store_true", help="also cProfile `runbook run` of N=1000 noop steps")
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args(argv)

    python, runbook = tools()
    if not runbook.exists():
        print(f"bench: {runbook} not found; run `make install` first", file=sys.stderr)
        return 2
    ws = new_workspace()
    fig: dict[str, Any] = {"runs": args.runs}
    try:
        log(f"workspace {ws}")
        fig["compileall"] = compile_package(python)
        fig["machine"] = machine_info(python, ws)
        log("start-up: python, runbook --help, runbook validate (library)")
        fig["startup"] = bench_startup(python, runbook, ws, args.runs)
        log("one-step runbooks")
        fig["one_step"] = bench_one_step(runbook, ws, args.runs)
        fig["steps"] = bench_steps(runbook, ws, args.runs)
        log("bare loop floor")
        fig["bare_loop"] = bare_loop(ws, 1000, args.runs)
        fig["spawn_floor"] = spawn_figures(ws, 300, args.runs)
        log("validate a generated 10,000-step runbook")
        fig["validate_big"] = bench_validate_big(runbook, ws, args.runs)
        fig["evidence"] = bench_evidence(runbook, ws, args.runs)
        if args.profile:
            fig["profile"] = {}
            for label, cmd in PROFILES.items():
                log(f"cProfile runbook {label}")
                fig["profile"][label] = profile_cmd(python, runbook, ws, cmd)
        if args.compare:
            fig["compare"], fig["compare_versions"] = compare(args.compare_runs)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)
    fig["machine"]["loadavg_end"] = os.getloadavg()
    fig["targets"] = [{"what": w, "target": g, "measured": v, "unit": u, "pass": v <= g} for w, g, v, u in targets(fig)]
    print(report(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    return 0


def compare(runs: int) -> tuple[dict[str, Any], dict[str, str]]:
    """chaostoolkit and ansible-playbook on the same workloads; a tool that cannot be installed is skipped."""
    import bench_compare

    status = bench_compare.ensure_venv(log)
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-compare-"))
    try:
        for tool, func in (("chaostoolkit", bench_compare.bench_chaos), ("ansible", bench_compare.bench_ansible)):
            if status[tool]:
                results[tool] = status[tool]
                log(f"{tool}: {status[tool]}")
                continue
            log(f"{tool} x{runs}")
            try:
                results[tool] = func(work / tool, runs)
            except (BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
                results[tool] = f"failed: {exc}"
                log(f"{tool}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results, bench_compare.tool_versions()


if __name__ == "__main__":
    raise SystemExit(main())
