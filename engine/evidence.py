"""Evidence bundles: the hash-chained event log, artifacts, manifest, and verification.

`events.jsonl` is also the run's write-ahead log: every record is written by
`EventLog.record`, so the chain rule lives in one place. Each line is the
canonical JSON of one record; `hash` is the sha256 of the record's canonical
JSON without `hash`; `prev` is the previous record's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import StateCorrupt
from engine.redact import Redactor
from engine.vocabulary import Outcome, RunStatus

GENESIS = "0" * 64
_LINE_BUFFER = 1 << 20  # reading a log line by line: a line longer than the buffer is read in buffer-sized pieces
EVENTS = "events.jsonl"
MANIFEST = "manifest.json"
REPORT = "report.md"
ARTIFACTS = "artifacts"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def canonical(record: Any) -> str:
    """The one serialisation that hashes are computed over."""
    return _CANONICAL.encode(record)


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
        return {k if isinstance(k, str) else str(k): _plain(v) if isinstance(v, _NESTED) else v
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) if isinstance(v, _NESTED) else v for v in value]
    return value


_NESTED = (dict, list, tuple)


_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(raw: bytes) -> Any:
    """`json.loads(raw)` of a JSON object on one line, without json.loads' per-call layers (it decides when in doubt)."""
    if raw[:2] == b'{"':
        try:
            text = raw.decode("utf-8", "surrogatepass")
            value, end = _SCAN(text, 0)
        except (ValueError, StopIteration):
            return json.loads(raw)
        if end == len(text) or text[end:] == "\n":
            return value
    return json.loads(raw)


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
            line, _ = _tail(self.path)
            if line:
                last = json.loads(line)
                self.seq, self.prev = last["seq"], last["hash"]
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


def _tail(path: Path) -> tuple[bytes, int]:
    """The last complete line of a log (b"" if none) and the offset where the log's complete lines end,
    read backwards from the end: reopening a log does not read it whole."""
    with path.open("rb") as handle:
        pos = handle.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            size = min(1 << 16, pos)
            pos -= size
            handle.seek(pos)
            buf = handle.read(size) + buf
            end = buf.rfind(b"\n")
            if end < 0:
                continue
            start = buf.rfind(b"\n", 0, end)
            if start >= 0 or pos == 0:
                return buf[start + 1:end + 1], pos + end + 1
        return b"", 0


def _drop_torn_tail(path: Path) -> dict[str, Any] | None:
    """Cut a partial last line (a crash mid-write) off the log; what was cut is returned as evidence."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return None
        _, keep = _tail(path)
        handle.seek(keep)
        tail = handle.read()
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return {"bytes": len(tail), "sha256": hashlib.sha256(tail).hexdigest(), "offset": keep}


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of an event log, one at a time (a torn last line from a crash is ignored)."""
    with path.open("rb", buffering=_LINE_BUFFER) as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            yield _loads(line)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete record of an event log, as a list (a torn last line from a crash is ignored)."""
    return list(iter_events(path))


# -- sealing and verification --------------------------------------------------------

REPORT_HTML = "report.html"
ATTESTATION = "attestation.dsse.json"
REQUIRED = (EVENTS, REPORT, REPORT_HTML)
SEALED = "bundle_sealed"
_HASH_KEY = b',"hash":"'
_SUFFIX = len(_HASH_KEY) + 64 + len(b'"}\n')
_COPY_BELOW = 4096  # a record's body shorter than this is hashed from a copy, which is quicker than a memoryview


@dataclass
class Chain:
    """What one pass over an intact event log learned: enough to derive and check the manifest."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    last_hash: str = GENESIS
    first_ts: str | None = None
    last: dict[str, Any] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)
    finished: dict[str, Any] | None = None
    finished_ts: str | None = None
    lifecycle: str | None = None
    artifacts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


_LIFECYCLE = ("run_started", "run_paused", "run_resumed", "run_finished")
_READ = frozenset(("artifact", SEALED, *_LIFECYCLE))
_TAIL = re.compile(rb',"prev":"([0-9a-f]{64})","seq":(\d+),"step":(?:null|"[^"\\]*"),"ts":"([^"\\]*)",'
                   rb'"type":"([^"\\]*)"')


def _record(line: bytes, end: int, full: bool) -> dict[str, Any]:
    """The fields of the record whose body is `line[:end] + b"}"`; `data` only when `full` or its type is one
    the chain summary reads.

    The canonical layout puts `data` first and five plain fields after it, so
    those are read from the tail without parsing (or copying) `data`; anything
    unusual is parsed in full.
    """
    at = line.rfind(b',"prev":"', 0, end)
    tail = _TAIL.fullmatch(line, at, end) if at > 8 and not full and line.startswith(b'{"data":') else None
    if tail is None:
        record = _loads(line[:end] + b"}")
        if not isinstance(record, dict):
            raise ValueError("not an object")
        return record
    kind = tail[4].decode("utf-8")
    return {"seq": int(tail[2]), "prev": tail[1].decode("ascii"), "ts": tail[3].decode("utf-8"), "type": kind,
            "data": _loads(line[8:at]) if kind in _READ else None}


def scan_chain(path: Path, keep: bool = True, each: Callable[[dict[str, Any]], None] | None = None) -> Chain:
    """Check every record's hash, `prev` and `seq`; StateCorrupt naming the first broken line.

    A record's hash is the sha256 of its line as written minus the trailing
    `,"hash":"<hex>"` member, which is the record's canonical JSON without `hash`.
    With `keep`, every record is parsed and kept in `events`; with `each`, every
    record is parsed and given to it once checked, in order, and not kept (a report
    built while the chain is checked); with neither, only what verification reads.
    """
    if not path.exists():
        raise StateCorrupt(f"{path}: missing event log")
    chain = Chain(path)
    prev, seq = GENESIS, 0
    sha256 = hashlib.sha256
    record: dict[str, Any] = {}
    full = keep or each is not None
    key_at, key_end = -_SUFFIX, -_SUFFIX + len(_HASH_KEY)
    with path.open("rb", buffering=_LINE_BUFFER) as handle:
        for number, line in enumerate(handle, start=1):
            if line[-1:] != b"\n":
                raise StateCorrupt(f"{path}:{number}: truncated record")
            if len(line) <= _SUFFIX or line[key_at:key_end] != _HASH_KEY:
                raise StateCorrupt(f"{path}:{number}: not a valid event record (no trailing hash)")
            end = len(line) - _SUFFIX
            claimed = line[key_end:-3].decode("ascii", errors="replace")
            try:
                record = _record(line, end, full)
            except ValueError:
                raise StateCorrupt(f"{path}:{number}: not a valid event record") from None
            if end > _COPY_BELOW:
                digest = sha256(memoryview(line)[:end])
                digest.update(b"}")
            else:
                digest = sha256(line[:end] + b"}")
            if digest.hexdigest() != claimed:
                raise StateCorrupt(f"{path}:{number}: record seq {record.get('seq')} was modified (hash mismatch)")
            if record.get("prev") != prev:
                raise StateCorrupt(f"{path}:{number}: record seq {record.get('seq')} does not follow the previous "
                                   "record (chain broken)")
            if record.get("seq") != seq + 1:
                raise StateCorrupt(f"{path}:{number}: expected seq {seq + 1}, found {record.get('seq')} "
                                   "(record missing or reordered)")
            record["hash"] = claimed
            prev, seq = claimed, seq + 1
            if keep:
                chain.events.append(record)
            if each is not None:
                each(record)
            kind = record.get("type")
            if kind not in _READ:
                continue
            if kind == "artifact":
                chain.artifacts.append((number, record.get("data") or {}))
            elif kind == "run_started" and seq == 1:
                chain.started, chain.first_ts = record.get("data") or {}, record.get("ts")
                chain.lifecycle = kind
            elif kind in _LIFECYCLE:
                chain.lifecycle = kind
                if kind == "run_finished":
                    chain.finished, chain.finished_ts = record.get("data") or {}, record.get("ts")
    if not chain.started:
        raise StateCorrupt(f"{path}:1: the log does not begin with run_started")
    chain.last_hash, chain.count, chain.last = prev, seq, record
    return chain


def manifest_fields(chain: Chain) -> dict[str, Any]:
    """The run fields of manifest.json, every one read from the event chain (so none can be edited alone)."""
    started = chain.started
    run = started.get("run") or {}
    finished = chain.finished
    if finished is not None:
        status, outcome, exit_code = RunStatus.FINISHED, finished.get("outcome"), finished.get("exit_code")
    elif chain.lifecycle == "run_paused":
        status, outcome, exit_code = RunStatus.PAUSED, Outcome.PAUSED, Outcome.PAUSED.exit_code
    else:
        status, outcome, exit_code = RunStatus.INTERRUPTED, None, None
    return {
        "run_id": run.get("id"), "runbook": started.get("runbook"), "runbook_path": started.get("path"),
        "runbook_sha256": started.get("sha256"), "runbook_version": started.get("version"),
        "engine_version": started.get("engine_version"), "params": started.get("params"),
        "mode": started.get("mode"), "operator": started.get("operator"), "host": started.get("host"),
        "trigger": started.get("trigger"), "parent_run_id": started.get("parent_run_id"),
        "started_at": run.get("started_at") or chain.first_ts, "ended_at": chain.finished_ts,
        "outcome": outcome, "exit_code": exit_code, "status": status,
    }


def sealing_temp(path: Path) -> Path:
    """The hidden sibling a sealed file (report, manifest, attestation) is written to before it replaces `path`."""
    return path.with_name(f".{path.name}.tmp")


SEALED_FILES = (REPORT, REPORT_HTML, MANIFEST, ATTESTATION)
# What a sealing process killed between writing a sealed file and renaming it leaves behind: not evidence,
# removed by the next seal (also the manifest's temporary name in earlier versions).
SEALING_TEMPS = frozenset({*(sealing_temp(Path(name)).name for name in SEALED_FILES), f"{MANIFEST}.tmp"})


def bundle_files(directory: Path) -> dict[str, str]:
    """sha256 of every file of the bundle except manifest.json and the attestation (which cover them) and a
    killed seal's temporary files."""
    files = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name not in (MANIFEST, ATTESTATION) and name not in SEALING_TEMPS:
            files[name] = sha256_file(path)
    return files


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_manifest(directory: Path, chain: Chain) -> dict[str, Any]:
    """Write manifest.json atomically: the chain-derived run fields, every file's sha256, the last event hash."""
    manifest = {**manifest_fields(chain), "files": bundle_files(directory), "last_event_hash": chain.last_hash,
                "event_count": chain.count}
    tmp = sealing_temp(directory / MANIFEST)
    tmp.write_text(_manifest_text(manifest), encoding="utf-8")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def attestation_predicate(manifest: dict[str, Any]) -> dict[str, Any]:
    """The run summary the attestation signs next to the file digests."""
    return {k: manifest.get(k) for k in ("run_id", "runbook", "mode", "outcome", "exit_code", "status",
                                         "last_event_hash", "event_count")}


def _artifact_problem(directory: Path, chain: Chain, present: dict[str, str]) -> str | None:
    """The first artifact whose file is gone or differs from the sha256 in its `artifact` event."""
    for number, data in chain.artifacts:
        name = str(data.get("path") or "")
        where = f"{chain.path}:{number}"
        if not name.startswith(f"{ARTIFACTS}/") or ".." in name.split("/"):
            return f"{where}: artifact event names a path outside artifacts/ ({name!r})"
        if name not in present:
            return f"{directory / name}: artifact recorded at {where} is missing"
        if present[name] != data.get("sha256"):
            return f"{directory / name}: artifact does not match the sha256 recorded in its artifact event ({where})"
    return None


def verify_bundle(directory: Path, keys: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
    """Check the chain, every artifact against its event, every file and manifest field, the reports, and the
    attestation (its signature too when `keys`, (label, Ed25519 public key) pairs, are given).
    StateCorrupt names the first broken record or file."""
    from engine import attestation

    chain = scan_chain(directory / EVENTS, keep=False)
    manifest = _read_manifest(directory / MANIFEST, chain)
    present = bundle_files(directory)
    _check_files(directory, chain, manifest, present)
    expected = _check_fields(directory / MANIFEST, manifest, chain)
    _check_seal(directory, chain, present)
    signature = attestation.check(directory, {**present, MANIFEST: sha256_file(directory / MANIFEST)},
                                  attestation_predicate(manifest), keys)
    return {"directory": str(directory), "events": chain.count, "files": len(present), "last_event_hash": chain.last_hash,
            "outcome": expected["outcome"], "run_id": expected["run_id"], "signature": signature,
            "signed": signature["signed"]}


def _read_manifest(path: Path, chain: Chain) -> dict[str, Any]:
    """manifest.json, exactly as the engine writes it, ending where the chain ends."""
    if not path.exists():
        raise StateCorrupt(f"{path}: missing: the bundle was never sealed (its run is still running or its "
                           "process died; `runbook resume` seals it) or the manifest was removed")
    try:
        text = path.read_bytes().decode("utf-8")  # as written: read_text would turn \r into \n
        manifest = json.loads(text)
    except ValueError:
        raise StateCorrupt(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise StateCorrupt(f"{path}: not a manifest (a JSON object with a files mapping)")
    if text != _manifest_text(manifest):
        raise StateCorrupt(f"{path}: not byte for byte the manifest the engine writes (edited)")
    if manifest.get("last_event_hash") != chain.last_hash or manifest.get("event_count") != chain.count:
        raise StateCorrupt(f"{path}: last_event_hash/event_count do not match the event log "
                           "(records added or removed)")
    return manifest


def check_same_files(directory: Path, listed: Mapping[str, Any], present: Mapping[str, str],
                     says: Mapping[str, str]) -> None:
    """StateCorrupt at the first file (by name) where a listed or signed sha256 map and the bundle's files
    differ; `says` words each kind of difference: "missing", "added", "modified"."""
    for name in sorted(set(listed) | set(present)):
        kind = ("missing" if name not in present else "added" if name not in listed
                else "modified" if listed[name] != present[name] else None)
        if kind:
            raise StateCorrupt(f"{directory / name}: {says[kind]}")


def _check_files(directory: Path, chain: Chain, manifest: dict[str, Any], present: dict[str, str]) -> None:
    """Artifacts match their events; the manifest lists exactly the files there are; no file is unaccounted for."""
    problem = _artifact_problem(directory, chain, present)
    if problem:
        raise StateCorrupt(problem)
    check_same_files(directory, manifest["files"], present, {
        "missing": "file listed in the manifest is missing",
        "added": "file is not listed in the manifest (added after the run)",
        "modified": "file was modified (sha256 differs from the manifest)"})
    for name in REQUIRED:
        if name not in present:
            raise StateCorrupt(f"{directory / name}: missing from the bundle")
    named = set(REQUIRED) | {str(data.get("path")) for _, data in chain.artifacts}
    unnamed = sorted(set(present) - named)
    if unnamed:
        raise StateCorrupt(f"{directory / unnamed[0]}: no artifact event records this file (added after the run)")


def _check_fields(path: Path, manifest: dict[str, Any], chain: Chain) -> dict[str, Any]:
    """Every run field of the manifest equals what the chain says; none missing, none added."""
    expected = manifest_fields(chain)
    for key in sorted(set(manifest) - {"files", "last_event_hash", "event_count"} | set(expected)):
        if key not in expected:
            raise StateCorrupt(f"{path}: field '{key}' is not backed by the event log (added)")
        if manifest.get(key, _ABSENT) != expected[key]:
            raise StateCorrupt(f"{path}: {key} {_short(manifest.get(key, '(absent)'))} does not match "
                               f"the event log ({_short(expected[key])})")
    return expected


def _check_seal(directory: Path, chain: Chain, present: dict[str, str]) -> None:
    """The chain ends with its bundle_sealed record, whose report digests and signer the bundle still has."""
    from engine.attestation import signer_of

    where = f"{chain.path}:{chain.count}"
    if chain.last.get("type") != SEALED:
        raise StateCorrupt(f"{where}: the log does not end with its {SEALED} record (records added after sealing)")
    sealed = chain.last.get("data") or {}
    for name, digest in sorted((sealed.get("reports") or {}).items()):
        if present.get(name) != digest:
            raise StateCorrupt(f"{directory / name}: edited after sealing (sha256 differs from the {SEALED} "
                               f"record, {where})")
    signer, expected = signer_of(directory), sealed.get("signer")
    if signer != expected:
        claim = (f"missing, but the bundle was sealed signed by key id {expected}" if signer is None
                 else f"claims key id {signer}, but the bundle was sealed {'by ' + str(expected) if expected else 'unsigned'}")
        raise StateCorrupt(f"{directory / ATTESTATION}: {claim} ({where})")


_ABSENT = object()


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


def describe(summary: dict[str, Any]) -> str:
    """The one line `evidence verify` prints for an intact bundle, saying what was and was not checked."""
    signature = summary["signature"]
    if signature["checked"]:
        signed = f"signature valid: Ed25519 key id {signature['keyid']} ({signature['key']})"
    elif signature["signed"]:
        signed = (f"signature NOT checked: signed by key id {signature['keyid']}; "
                  "pass --key PUB to check it")
    else:
        signed = "not signed"
    return (f"OK {summary['directory']}: {summary['events']} events, {summary['files']} files, chain intact, "
            f"artifacts and manifest match the event log; outcome {summary['outcome']}; {signed}")
