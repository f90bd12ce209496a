#!/usr/bin/env python3
"""Check a runbook-engine evidence bundle without the engine: Python 3 standard library + `cryptography`.

    python verify_bundle.py BUNDLE_DIR [SIGNER.pub ...]

Checks, as docs/evidence-format.md describes them:
  1. events.jsonl: each record's hash is the sha256 of the record without `hash`, `prev` chains, `seq` counts;
  2. every artifact file has the sha256 its `artifact` event recorded;
  3. manifest.json lists every other file with its sha256 and the last event hash;
  4. attestation.dsse.json (when present): a DSSE envelope over an in-toto Statement whose subjects are
     exactly the bundle's other files; with SIGNER.pub given, its Ed25519 signature must verify.
Exit 0 when intact, 30 naming the first problem otherwise (the engine's STATE_CORRUPT code).
The engine's own `runbook evidence verify` also re-derives every manifest field and the reports.
"""

import base64
import hashlib
import json
import sys
from pathlib import Path

SKIP = ("manifest.json", "attestation.dsse.json",
        # a killed seal's temporary files (not evidence; the next seal removes them)
        ".report.md.tmp", ".report.html.tmp", ".manifest.json.tmp", ".attestation.dsse.json.tmp", "manifest.json.tmp")


def fail(message):
    print(f"FAIL {message}")
    sys.exit(30)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_events(bundle):
    prev, artifacts = "0" * 64, {}
    for number, line in enumerate((bundle / "events.jsonl").read_bytes().splitlines(), start=1):
        record = json.loads(line)
        claimed = record.pop("hash")
        body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if hashlib.sha256(body.encode("utf-8")).hexdigest() != claimed:
            fail(f"events.jsonl:{number}: record modified")
        if record["prev"] != prev or record["seq"] != number:
            fail(f"events.jsonl:{number}: chain broken")
        if record["type"] == "artifact":
            artifacts[record["data"]["path"]] = record["data"]["sha256"]
        prev = claimed
    return prev, number, artifacts


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    bundle = Path(argv[0])
    files = {p.relative_to(bundle).as_posix(): sha256(p) for p in sorted(bundle.rglob("*"))
             if p.is_file() and p.relative_to(bundle).as_posix() not in SKIP}
    last, count, artifacts = check_events(bundle)
    for name, digest in artifacts.items():
        if files.get(name) != digest:
            fail(f"{name}: missing or not the file its artifact event recorded")
    for name in files:
        if name.startswith("artifacts/") and name not in artifacts:
            fail(f"{name}: no artifact event records this file")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    if manifest["last_event_hash"] != last or manifest["event_count"] != count:
        fail("manifest.json: last event hash does not match events.jsonl")
    if manifest["files"] != files:
        fail("manifest.json: files differ from the bundle (" +
             ", ".join(sorted(set(manifest["files"]) ^ set(files)) or "a sha256 differs") + ")")
    envelope_path = bundle / "attestation.dsse.json"
    if not envelope_path.exists():
        if len(argv) > 1:
            fail("attestation.dsse.json: missing, but a signer key was given")
        print(f"OK {bundle}: {count} events, {len(files)} files, not signed")
        return 0
    envelope = json.loads(envelope_path.read_text(encoding="utf-8"))
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    if envelope["payloadType"] != "application/vnd.in-toto+json" or statement["_type"] != "https://in-toto.io/Statement/v1":
        fail("attestation.dsse.json: not a DSSE envelope over an in-toto Statement v1")
    if subjects != {**files, "manifest.json": sha256(bundle / "manifest.json")}:
        fail("attestation.dsse.json: subjects differ from the bundle's files")
    if len(argv) == 1:
        print(f"OK {bundle}: {count} events, {len(files)} files; signature NOT checked (give SIGNER.pub)")
        return 0
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    kind = envelope["payloadType"].encode()
    signed = b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
    for key_path in argv[1:]:
        key = serialization.load_pem_public_key(Path(key_path).read_bytes())
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        keyid = hashlib.sha256(der).hexdigest()
        for signature in envelope["signatures"]:
            if signature["keyid"] != keyid:
                continue
            try:
                key.verify(base64.b64decode(signature["sig"]), signed)
            except InvalidSignature:
                fail(f"attestation.dsse.json: signature by key id {keyid} does not verify")
            print(f"OK {bundle}: {count} events, {len(files)} files; signature valid, key id {keyid} ({key_path})")
            return 0
    fail("attestation.dsse.json: not signed by any of the given keys")
    return 30


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
