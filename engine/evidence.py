"""Evidence bundles: the hash-chained event log, artifacts, manifest, and verification.

`events.jsonl` is also the run's write-ahead log: every record is written by
`EventLog.record`, so the chain rule lives in one place. Each line is the
canonical JSON of one record; `hash` is the sha256 of the record's canonical
JSON without `hash`; `prev` is the previous record's hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import StateCorrupt
from engine.redact import Redactor

GENESIS = "0" * 64
EVENTS = "events.jsonl"
MANIFEST = "manifest.json"
REPORT = "report.md"
ARTIFACTS = "artifacts"


def canonical(record: Any) -> str:
    """The one serialisation that hashes are computed over."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def utc_now() -> str:
    """UTC time in RFC 3339 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """`value` with tuples as lists and every mapping key a string: what a JSON round trip gives back."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class EventLog:
    """Appends hash-chained records to `events.jsonl`; reopens an existing log to continue it."""

    def __init__(self, directory: Path, redactor: Redactor) -> None:
        self.directory = directory
        self.redactor = redactor
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / EVENTS
        self.seq = 0
        self.prev = GENESIS
        if self.path.exists():
            last = read_events(self.path)
            if last:
                self.seq, self.prev = last[-1]["seq"], last[-1]["hash"]
        torn = _drop_torn_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if torn:
            self.record("torn_record_dropped", None, torn)

    def record(self, type_: str, step: str | None = None, data: dict[str, Any] | None = None, *, sync: bool = True) -> dict[str, Any]:
        """Append one record; fsync it unless `sync` is False (a later synced record covers it)."""
        self.seq += 1
        record = {"seq": self.seq, "ts": utc_now(), "type": type_, "step": step, "data": _plain(data or {}),
                  "prev": self.prev}
        try:
            body = canonical(record)
        except (TypeError, ValueError):
            body = ""
        if not body or self.redactor.needs_redaction(body):
            record["data"] = _json_safe(self.redactor.data(data or {}))
            body = canonical(record)
        record["hash"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
        os.write(self._fd, (body[:-1] + ',"hash":"' + record["hash"] + '"}\n').encode("utf-8"))
        if sync:
            os.fsync(self._fd)
        self.prev = record["hash"]
        return record

    def artifact(self, step: str | None, name: str, content: str | bytes) -> dict[str, Any]:
        """Store an artifact (redacted) and record its sha256 in an `artifact` event."""
        folder = self.directory / ARTIFACTS
        folder.mkdir(exist_ok=True)
        text = content if isinstance(content, str) else content.decode("utf-8", errors="replace")
        data = self.redactor.text(text).encode("utf-8")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        relative = f"{ARTIFACTS}/{self.seq + 1:06d}-{step or 'run'}-{safe}"
        path = self.directory / relative
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        return self.record("artifact", step, {"name": name, "path": relative, "sha256": digest, "bytes": len(data)}, sync=False)

    def close(self) -> None:
        """Flush and close the log."""
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _drop_torn_tail(path: Path) -> dict[str, Any] | None:
    """Cut a partial last line (a crash mid-write) off the log; what was cut is returned as evidence."""
    if not path.exists():
        return None
    with path.open("rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return None
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    tail = data[keep:]
    return {"bytes": len(tail), "sha256": hashlib.sha256(tail).hexdigest(), "offset": keep}


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete record of an event log (a torn last line from a crash is ignored)."""
    events = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            events.append(json.loads(line))
    return events


def _check_manifest_fields(path: Path, manifest: dict[str, Any], started: dict[str, Any],
                           finished: dict[str, Any] | None) -> None:
    """The manifest must say what the chain says (an unsigned manifest is otherwise editable)."""
    pairs = [("mode", started.get("mode")), ("runbook_sha256", started.get("sha256")),
             ("runbook_version", started.get("version")),
             ("operator", started.get("operator")), ("runbook", started.get("runbook"))]
    run = started.get("run") or {}
    if run.get("id"):
        pairs.append(("run_id", run["id"]))
    if manifest.get("status") == "finished":
        if finished is None:
            raise StateCorrupt(f"{path}: says the run finished but the event log has no run_finished record")
        pairs += [("outcome", finished.get("outcome")), ("exit_code", finished.get("exit_code"))]
    for field, expected in pairs:
        if expected is not None and manifest.get(field) != expected:
            raise StateCorrupt(f"{path}: {field} {manifest.get(field)!r} does not match the event log ({expected!r})")


def write_manifest(directory: Path, fields: dict[str, Any], last_hash: str, event_count: int,
                   signing_key: str | None = None) -> dict[str, Any]:
    """Write manifest.json: run fields, the sha256 of every file in the bundle, the last event hash."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(directory).as_posix()] = sha256_file(path)
    manifest = {**fields, "files": files, "last_event_hash": last_hash, "event_count": event_count}
    if signing_key:
        manifest["signature"] = {"algorithm": "hmac-sha256", "value": _sign(manifest, signing_key)}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def _sign(manifest: dict[str, Any], key: str) -> str:
    body = canonical({k: v for k, v in manifest.items() if k != "signature"})
    return hmac.new(key.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_bundle(directory: Path, signing_key: str | None = None) -> dict[str, Any]:
    """Check the chain, every file hash and the manifest; StateCorrupt naming the first break."""
    events_path = directory / EVENTS
    if not events_path.exists():
        raise StateCorrupt(f"{events_path}: missing event log")
    prev, seq, count = GENESIS, 0, 0
    started: dict[str, Any] = {}
    finished: dict[str, Any] | None = None
    with events_path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{events_path}:{number}"
            if not line.endswith(b"\n"):
                raise StateCorrupt(f"{where}: truncated record")
            try:
                record = json.loads(line)
                claimed = record.pop("hash")
            except (ValueError, KeyError, AttributeError, TypeError):
                raise StateCorrupt(f"{where}: not a valid event record") from None
            if hashlib.sha256(canonical(record).encode("utf-8")).hexdigest() != claimed:
                raise StateCorrupt(f"{where}: record seq {record.get('seq')} was modified (hash mismatch)")
            if record.get("prev") != prev:
                raise StateCorrupt(f"{where}: record seq {record.get('seq')} does not follow the previous record (chain broken)")
            if record.get("seq") != seq + 1:
                raise StateCorrupt(f"{where}: expected seq {seq + 1}, found {record.get('seq')} (record missing or reordered)")
            prev, seq, count = claimed, seq + 1, count + 1
            if record.get("type") == "run_started" and not started:
                started = record.get("data") or {}
            elif record.get("type") == "run_finished":
                finished = record.get("data") or {}
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise StateCorrupt(f"{manifest_path}: missing manifest")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        raise StateCorrupt(f"{manifest_path}: not valid JSON") from None
    if manifest.get("last_event_hash") != prev:
        raise StateCorrupt(f"{manifest_path}: last_event_hash does not match the event log (records added or removed)")
    signature = manifest.get("signature")
    if signature and signing_key and not hmac.compare_digest(signature.get("value", ""), _sign(manifest, signing_key)):
        raise StateCorrupt(f"{manifest_path}: signature does not match")
    if signing_key and not signature:
        raise StateCorrupt(f"{manifest_path}: manifest is not signed but a signing key is configured")
    _check_manifest_fields(manifest_path, manifest, started, finished)
    listed = manifest.get("files", {})
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST}
    for name in sorted(listed):
        if name not in present:
            raise StateCorrupt(f"{directory / name}: file listed in the manifest is missing")
        if sha256_file(directory / name) != listed[name]:
            raise StateCorrupt(f"{directory / name}: file was modified (sha256 mismatch)")
    extra = sorted(present - set(listed))
    if extra:
        raise StateCorrupt(f"{directory / extra[0]}: file is not listed in the manifest (added after the run)")
    return {"directory": str(directory), "events": count, "files": len(listed), "last_event_hash": prev,
            "signed": bool(signature), "outcome": manifest.get("outcome"), "run_id": manifest.get("run_id")}
