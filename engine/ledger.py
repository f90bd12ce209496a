"""The run ledger `<evidence_dir>/ledger.jsonl` and `runbook evidence audit`.

Every seal appends `{seq, run_id, manifest_sha256, prev, hash}`, hash-chained
like events.jsonl, under an exclusive lock so concurrent runs never fork it. A
run sealed several times (paused, approved, finished) has several entries; the
last one names the manifest its bundle must have now.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import StateCorrupt, UnknownRun, UsageError
from engine.evidence import EVENTS, MANIFEST, describe, verify_bundle
from engine.runs import RunStore, effective_status
from engine.vocabulary import RunStatus

LEDGER = "ledger.jsonl"
GENESIS = "0" * 64


def _line(entry: dict[str, Any]) -> tuple[str, bytes]:
    body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return digest, (body[:-1] + ',"hash":"' + digest + '"}\n').encode("utf-8")


def append(evidence_dir: Path, run_id: str, manifest_sha256: str) -> dict[str, Any]:
    """Append one sealed manifest to the ledger (a torn last line from a crash is cut first)."""
    evidence_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(evidence_dir / LEDGER, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.lseek(fd, 0, os.SEEK_END)
        tail = os.pread(fd, min(size, 1 << 16), size - min(size, 1 << 16))
        if tail and not tail.endswith(b"\n"):
            size -= len(tail) - (tail.rfind(b"\n") + 1)
            os.ftruncate(fd, size)
            tail = tail[: tail.rfind(b"\n") + 1]
        seq, prev = 0, GENESIS
        lines = tail.splitlines()
        if lines:
            last = json.loads(lines[-1])
            seq, prev = int(last["seq"]), str(last["hash"])
        entry = {"seq": seq + 1, "run_id": run_id, "manifest_sha256": manifest_sha256, "prev": prev}
        digest, data = _line(entry)
        os.pwrite(fd, data, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {**entry, "hash": digest}


def read(evidence_dir: Path) -> list[dict[str, Any]]:
    """Every ledger entry after checking its hash, `prev` and `seq`; StateCorrupt naming the first bad line."""
    path = evidence_dir / LEDGER
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    prev = GENESIS
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                entry = json.loads(raw)
                claimed = entry.pop("hash")
            except (ValueError, KeyError, AttributeError, TypeError):
                raise StateCorrupt(f"{where}: not a valid ledger entry") from None
            if not raw.endswith(b"\n") or _line(entry)[0] != claimed:
                raise StateCorrupt(f"{where}: ledger entry seq {entry.get('seq')} was modified (hash mismatch)")
            if entry.get("prev") != prev or entry.get("seq") != number:
                raise StateCorrupt(f"{where}: ledger entry seq {entry.get('seq')} does not follow the previous "
                                   "entry (entries removed, inserted or reordered)")
            prev = claimed
            entries.append({**entry, "hash": claimed})
    return entries


def parse_since(text: str) -> str:
    """`--since` as a UTC ISO prefix comparable with run start times (YYYY-MM-DD or a full ISO time)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a date such as 2026-01-31 or 2026-01-31T08:00:00Z") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _started(run_id: str, manifest: dict[str, Any] | None) -> str:
    if manifest and isinstance(manifest.get("started_at"), str):
        return str(manifest["started_at"])
    stamp = run_id[:16]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").isoformat(timespec="microseconds") + "Z"
    except ValueError:
        return ""


@dataclass
class Audit:
    """What `evidence audit` found: one line per bundle, and the problems (any problem means exit 30)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verified: int = 0
    signatures: int = 0
    entries: int = 0


def audit(evidence_dir: Path, state_dir: Path, since: str | None = None,
          keys: Sequence[tuple[str, Any]] = ()) -> Audit:
    """Verify the ledger and every bundle it lists or that lies in `evidence_dir`: a bundle missing, replaced
    (manifest not the one last recorded), not in the ledger, or failing `verify` is a problem."""
    out = Audit()
    try:
        entries = read(evidence_dir)
    except StateCorrupt as exc:
        out.problems.append(str(exc))
        entries = []
    out.entries = len(entries)
    latest = {e["run_id"]: e["manifest_sha256"] for e in entries}
    on_disk = {p.name for p in evidence_dir.iterdir() if p.is_dir()} if evidence_dir.exists() else set()
    store = RunStore(state_dir)
    for run_id in sorted(set(latest) | on_disk):
        directory = evidence_dir / run_id
        manifest_path = directory / MANIFEST
        manifest = None
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except ValueError:
                manifest = None
        if since and _started(run_id, manifest) < since:
            continue
        try:
            status = effective_status(store.load(run_id))
        except (UnknownRun, StateCorrupt):
            status = None
        if status == RunStatus.RUNNING:
            out.lines.append(f"skip {run_id}: running now; audit it once it is sealed")
            continue
        if run_id not in latest:
            if not manifest_path.exists():
                out.lines.append(f"skip {run_id}: never sealed ({status or 'no run record'}); resume it to seal it")
                continue
            out.problems.append(f"{directory}: bundle is not in the ledger {evidence_dir / LEDGER}")
            continue
        if not directory.is_dir():
            out.problems.append(f"{directory}: bundle listed in the ledger is missing")
            continue
        if not manifest_path.exists() or hashlib.sha256(manifest_path.read_bytes()).hexdigest() != latest[run_id]:
            out.problems.append(f"{manifest_path}: not the manifest the ledger recorded for this run (bundle replaced)")
            continue
        try:
            summary = verify_bundle(directory, keys)
        except StateCorrupt as exc:
            out.problems.append(str(exc))
            continue
        out.verified += 1
        signature = summary["signature"]
        out.signatures += int(signature["checked"])
        sig = (f"signed by {signature['keyid'][:16]} ({signature['key']})" if signature["checked"]
               else "signed, not checked" if signature["signed"] else "unsigned")
        out.lines.append(f"ok   {run_id}: {summary['outcome']}, {summary['events']} events, {sig}")
    return out


def audit_command(config: Any, since: str | None, keys: Sequence[tuple[str, Any]]) -> int:
    """`runbook evidence audit`: print one line per bundle, then the problems; 0 when none, else 30."""
    result = audit(config.evidence_dir, config.state_dir, parse_since(since) if since else None, keys)
    for line in result.lines:
        print(line)
    for problem in result.problems:
        print(f"FAIL {problem}")
    checked = f", {result.signatures} signatures checked" if keys else " (signatures not checked: no --key)"
    print(f"{'OK' if not result.problems else 'FAILED'}: ledger {result.entries} entries, {result.verified} bundles "
          f"verified{checked}, {len(result.problems)} problems")
    return 30 if result.problems else 0


def recorded_manifest(evidence_dir: Path, run_id: str) -> str | None:
    """The manifest sha256 the ledger in `evidence_dir` last recorded for `run_id`; None when it lists no such
    run (or there is no ledger: a bundle copied elsewhere)."""
    try:
        entries = read(evidence_dir)
    except StateCorrupt:
        return None
    return next((str(e["manifest_sha256"]) for e in reversed(entries) if e["run_id"] == run_id), None)


def verify_in_place(config: Any, directory: Path, keys: Sequence[tuple[str, Any]]) -> str:
    """`runbook evidence verify`: the bundle on its own, then what the state directory and the ledger next to
    it remember of the run (its last record hash, its last manifest). The line to print; StateCorrupt if any
    disagrees."""
    summary = verify_bundle(directory, keys)
    run_id = str(summary["run_id"])
    try:
        record = RunStore(config.state_dir).load(run_id)
    except UnknownRun:
        record = None
    if record is not None and record.last_event_hash and record.last_event_hash != summary["last_event_hash"]:
        raise StateCorrupt(f"{directory / EVENTS}: last record hash differs from the one the state directory kept "
                           f"for run {run_id} (the log was rewritten)")
    recorded = recorded_manifest(directory.parent, run_id)
    if recorded is not None and recorded != hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest():
        raise StateCorrupt(f"{directory / MANIFEST}: not the manifest {directory.parent / LEDGER} recorded last for "
                           f"run {run_id} (bundle replaced)")
    return describe(summary) + ("; matches the run ledger" if recorded else "")
