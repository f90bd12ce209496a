"""Benchmark of `runbook serve`: alert -> first step latency, and intake under a storm with redeliveries.

    .venv/bin/python bench/serve.py [--alerts 20] [--rate 200] [--seconds 10]

1. Latency: alerts posted one at a time to a real server (127.0.0.1, free port); for each, the time
   from the POST to the run's first `step_started` event, and from the inbox's accepted_at to it.
2. Storm: `rate` webhooks/s for `seconds`, a third of them redeliveries of an earlier alert; the
   202 latencies (p50, p99), and from the inbox: zero lost (every alert answered `started` has its
   row), zero started twice (one row per fingerprint). Runs are throttled (max_concurrent_runs 1) so
   the intake is what is measured.
Figures are written to stdout; paste them into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

TOKEN = "bench-token"
RUNBOOK = """runbook: hello
title: Hello
version: 1
steps:
  - id: say
    check: noop
  - id: done
    end: SUCCESS
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alert(fingerprint: str) -> dict[str, Any]:
    return {"status": "firing", "labels": {"alertname": "Bench", "id": fingerprint},
            "annotations": {}, "startsAt": "2026-11-22T14:36:38Z", "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint}


def _body(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "bench", "alerts": list(alerts)}


def _workspace(root: Path, max_concurrent: int) -> None:
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "hello.yaml").write_text(RUNBOOK)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (root / "runbook.yaml").write_text(
        f"runbook_paths: [runbooks]\nserve:\n  max_concurrent_runs: {max_concurrent}\n"
        f"  tokens: {{bench: \"sha256:{digest}\"}}\n"
        "triggers:\n  - name: bench\n    on: {alertmanager: {alertname: Bench}}\n    runbook: hello\n")


def _start(root: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("serve did not start")


def _first_step(root: Path, run_id: str) -> float | None:
    path = root / "evidence" / run_id / "events.jsonl"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "step_started":
            return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
    return None


def latency(count: int) -> dict[str, float]:
    """Median and p90 of POST -> first step started, over `count` alerts posted one at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _workspace(root, 4)
        port = _port()
        proc = _start(root, port)
        time.sleep(2)  # let the spare worker finish importing, as it has in steady state
        posted, accepted = [], []
        db = sqlite3.connect(str(root / ".runbook" / "serve" / "inbox.sqlite"))
        try:
            for n in range(count):
                t0 = time.time()
                answer = httpx.post(f"http://127.0.0.1:{port}/hooks/alertmanager", json=_body(_alert(f"lat{n}")),
                                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
                run_id = answer["decisions"][0]["run_id"]
                deadline = time.monotonic() + 60
                while (step := _first_step(root, run_id)) is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert step is not None, run_id
                acc = db.execute("SELECT accepted_at FROM events WHERE run_id = ?", (run_id,)).fetchone()[0]
                posted.append(step - t0)
                accepted.append(step - acc)
                time.sleep(0.5)
        finally:
            db.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {"post_to_first_step_median_s": statistics.median(posted),
            "post_to_first_step_p90_s": sorted(posted)[int(0.9 * (len(posted) - 1))],
            "accept_to_first_step_median_s": statistics.median(accepted)}


async def _storm(port: int, rate: int, seconds: float) -> tuple[list[float], list[dict[str, Any]], int]:
    latencies: list[float] = []
    decisions: list[dict[str, Any]] = []
    errors = 0
    sent: list[str] = []
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one(fingerprint: str) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                response = await client.post(f"http://127.0.0.1:{port}/hooks/alertmanager",
                                             json=_body(_alert(fingerprint)),
                                             headers={"Authorization": f"Bearer {TOKEN}"})
                latencies.append(time.perf_counter() - t0)
                decisions.extend(response.json()["decisions"])
            except httpx.HTTPError:
                errors += 1

        tasks = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if sent and n % 3 == 2:
                fingerprint = rng.choice(sent)  # a redelivery
            else:
                fingerprint = f"storm{n}"
                sent.append(fingerprint)
            tasks.append(asyncio.create_task(one(fingerprint)))
        await asyncio.gather(*tasks)
    return latencies, decisions, errors


def storm(rate: int, seconds: float) -> dict[str, Any]:
    """202 latencies and the lost / started-twice counts of a storm."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _workspace(root, 1)
        port = _port()
        proc = _start(root, port)
        try:
            t0 = time.perf_counter()
            latencies, decisions, errors = asyncio.run(_storm(port, rate, seconds))
            elapsed = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        db = sqlite3.connect(str(root / ".runbook" / "serve" / "inbox.sqlite"))
        rows = db.execute("SELECT fingerprint, run_id FROM events").fetchall()
        db.close()
    started = {d["alert"]: d["run_id"] for d in decisions if d["decision"] == "started"}
    in_inbox = dict(rows)
    lost = [fp for fp, run_id in started.items() if in_inbox.get(fp) != run_id]
    twice = len(rows) - len({fp for fp, _ in rows})
    ordered = sorted(latencies)
    return {"requests": len(latencies) + errors, "errors": errors, "elapsed_s": round(elapsed, 2),
            "accepted_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
            "started": len(started), "duplicate": sum(d["decision"] == "duplicate" for d in decisions),
            "lost": len(lost), "started_twice": twice}


def main() -> int:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps({"latency": latency(args.alerts)}, indent=2))
    print(json.dumps({"storm": storm(args.rate, args.seconds)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
