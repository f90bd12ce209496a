"""Approvals that count: given through `runbook approve`, the terminal prompt or the serve API.

Every decision is first written, atomically, as one file under
`<state_dir>/approvals/<run_id>/`. `approve` (engine/approve.py) writes only that file: it never
touches the event log or executes a step, so a crash at any point leaves the
run resumable. The run's driver takes pending decisions into the event log
(`ingest`) and, on resume, every `approval` record of the log must match a
file of that folder (`check_counted`): a record written any other way is a
forgery, and resume stops (exit 30).

Signed approvals (SPEC 8): with `approvals: {require_signature: true, keys: {NAME: PUB}}` in
runbook.yaml, `runbook approve --key KEY` signs (Ed25519) the canonical JSON of
`{run_id, step, decision, note, plan_sha256}`; the signature and the key id are kept in the
decision's file and its `approval` record. An unsigned decision, or one whose signature does not
verify against the approver's configured key, is refused (and stored as a refusal); on resume
every counted decision is verified again, so a stored file edited by hand stops the run (exit 30).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import records
from engine.errors import StateCorrupt, UsageError
from engine.evidence import canonical
from engine.keys import key_id, load_private, load_public
from engine.model import ApproveStep
from engine.runs import atomic_write_json

COUNTED_FIELDS = ("decision", "by", "note", "via", "plan_sha256", "plans", "rebind", "signature", "key_id")
EXTRA_FIELDS = ("plan_sha256", "plans", "rebind", "signature", "key_id")


@dataclass(frozen=True)
class Policy:
    """`approvals:` of runbook.yaml: whether decisions must be signed, and each approver's public key."""

    require_signature: bool = False
    keys: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Any) -> Policy:
        """The policy a configuration sets."""
        return cls(bool(getattr(config, "approvals_require_signature", False)),
                   dict(getattr(config, "approval_keys", {}) or {}))


def plans_sha256(plans: Any) -> str:
    """sha256 of the canonical JSON of the plans an approval is bound to."""
    return hashlib.sha256(canonical(plans).encode("utf-8")).hexdigest()


def signed_payload(run_id: str, step: str, decision: str, note: str | None, plan_sha256: str | None) -> bytes:
    """The bytes an approver signs: canonical JSON of what they decided, on what."""
    return canonical({"run_id": run_id, "step": step, "decision": decision, "note": note,
                      "plan_sha256": plan_sha256}).encode("utf-8")


def sign(key_path: Path, run_id: str, step: str, decision: str, note: str | None,
         plan_sha256: str | None) -> tuple[str, str]:
    """(base64 Ed25519 signature, key id) of a decision signed with the private key in `key_path`."""
    private = load_private(key_path)
    signature = private.sign(signed_payload(run_id, step, decision, note, plan_sha256))
    return base64.b64encode(signature).decode("ascii"), key_id(private.public_key())


def signature_problem(policy: Policy, run_id: str, entry: Mapping[str, Any]) -> str | None:
    """Why a decision's signature does not show that its approver gave it, or None when it does."""
    from cryptography.exceptions import InvalidSignature


    by = str(entry.get("by") or "")
    path = policy.keys.get(by)
    if path is None:
        return (f"approvals must be signed and no public key is configured for '{by}' "
                f"(approvals.keys in runbook.yaml names: {', '.join(sorted(policy.keys)) or 'nobody'})")
    if not entry.get("signature"):
        return (f"approvals must be signed: give it with `runbook approve RUN_ID {entry.get('step')} --by {by} "
                "--key PRIVATE_KEY`")
    try:
        public = load_public(path)
    except UsageError as exc:
        return f"the public key of '{by}' cannot be read: {exc}"
    expected_id = key_id(public)
    try:
        signature = base64.b64decode(str(entry["signature"]), validate=True)
        public.verify(signature, signed_payload(run_id, str(entry.get("step")), str(entry.get("decision")),
                                                entry.get("note"), entry.get("plan_sha256")))
    except (InvalidSignature, ValueError):
        signer = f"key {str(entry.get('key_id'))[:16]}" if entry.get("key_id") else "an unknown key"
        return (f"the signature does not verify against the key of '{by}' ({expected_id[:16]}); "
                f"it was made with {signer} or over other content")
    return None


def approval_refusal(step: ApproveStep, by: str, operator: str) -> str | None:
    """Why `by` may not approve this step, or None when they may."""
    if not by.strip():
        return "an approver must give their name"
    if step.approvers and by not in step.approvers:
        return f"'{by}' is not an approver of step '{step.id}' (expected one of: {', '.join(step.approvers)})"
    if step.four_eyes and _person(by) == _person(operator):
        return f"four-eyes: '{by}' started this run and cannot approve it"
    return None


def _person(name: str) -> str:
    """Who acts: `serve:alice` (a run serve started for token identity alice) is alice."""
    return name.removeprefix("serve:").strip()


@dataclass(frozen=True)
class ApprovalBox:
    """The decisions given for one run, one file each, and the policy they are checked against."""

    folder: Path
    policy: Policy = field(default_factory=Policy)

    @classmethod
    def of(cls, state_dir: Path, run_id: str, policy: Policy | None = None) -> ApprovalBox:
        """The box of a run (under `policy`, the `approvals:` of the configuration; none: nothing required)."""
        return cls(state_dir / "approvals" / run_id, policy or Policy())

    def give(self, step: str, decision: str, by: str, note: str | None, via: str,
             refused: str | None = None, *, signature: str | None = None, key_id: str | None = None,
             plan_sha256: str | None = None, plans: Any = None, rebind: bool = False) -> str:
        """Store one decision durably and return its id (with its signature and bound plans when it has them)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        approval_id = f"{stamp}-{secrets.token_hex(4)}"
        entry = {"id": approval_id, "step": step, "decision": decision, "by": by, "note": note, "via": via,
                 "refused": refused, "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        extra = {"plan_sha256": plan_sha256, "plans": plans, "rebind": rebind or None, "signature": signature,
                 "key_id": key_id}
        entry.update({k: v for k, v in extra.items() if v is not None})
        atomic_write_json(self.folder / f"{approval_id}.json", entry)
        return approval_id

    def entries(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and entry.get("id") == path.stem:
                out.append(entry)
        return out

    def find(self, approval_id: str) -> dict[str, Any] | None:
        """One decision by id."""
        if not approval_id or "/" in approval_id or approval_id.startswith("."):
            return None
        path = self.folder / f"{approval_id}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None


def pending(box: ApprovalBox, known_ids: list[str]) -> list[dict[str, Any]]:
    """Decisions given but not yet in the event log (StateCorrupt when a signed one no longer verifies)."""
    known = set(known_ids)
    out = [e for e in box.entries() if e["id"] not in known]
    for entry in out:
        if not entry.get("refused"):
            _check_signed(box, entry, None)
    return out


def _check_signed(box: ApprovalBox, entry: Mapping[str, Any], seq: Any) -> None:
    """StateCorrupt when signatures are required and a counted decision's stored file does not verify."""
    policy = box.policy
    plans = entry.get("plans")
    where = f"events.jsonl record {seq}: " if seq is not None else f"{box.folder / str(entry.get('id'))}.json: "
    if plans is not None and plans_sha256(plans) != entry.get("plan_sha256"):
        raise StateCorrupt(f"{where}the plans of the approval of step '{entry.get('step')}' do not match its "
                           "plan_sha256; refusing to continue")
    if not policy.require_signature:
        return
    problem = signature_problem(policy, box.folder.name, entry)
    if problem:
        raise StateCorrupt(f"{where}approval of step '{entry.get('step')}' by {entry.get('by')!r}: {problem}; "
                           "the stored decision was not given as signed; refusing to continue")


def record_of(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event-log record (type, data) for a stored decision."""
    if entry.get("refused"):
        return "approval_refused", records.approval_refused(entry["by"], entry["refused"], via=entry["via"],
                                                            approval_id=entry["id"], note=entry.get("note"))
    extra = {k: entry[k] for k in EXTRA_FIELDS if entry.get(k) is not None}
    return "approval", records.approval(entry["decision"], entry["by"], note=entry.get("note"), via=entry["via"],
                                        approval_id=entry["id"], **extra)


def check_counted(events: list[dict[str, Any]], box: ApprovalBox, redact: Any) -> None:
    """StateCorrupt unless every approval in the log was given through a way that counts."""
    for event in events:
        if event["type"] != "approval":
            continue
        data = event.get("data") or {}
        if data.get("decision") == "would ask":
            continue
        entry = box.find(str(data.get("id") or ""))
        if entry is None or entry.get("step") != event.get("step") or entry.get("refused") or any(
                redact(entry.get(k)) != data.get(k) for k in COUNTED_FIELDS):
            raise StateCorrupt(f"events.jsonl record {event['seq']}: approval of step '{event.get('step')}' by "
                               f"{data.get('by')!r} was not given through `runbook approve`, the terminal prompt or "
                               "the serve API; refusing to continue")
        _check_signed(box, entry, event["seq"])
