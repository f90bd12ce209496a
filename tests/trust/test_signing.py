"""SPEC 8 signed bundles: Ed25519 key pairs, a DSSE/in-toto attestation anyone can check, and a key that
never leaves the engine."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trust.helpers import REPO, cli, run, signed_workspace

LEAKY = """
runbook: leaky
title: Prints everything it can see
version: 1
steps:
  - id: show
    check: shell
    with: {argv: [sh, -c, "env; cat runbook.yaml"]}
    evidence: [stdout]
  - id: done
    end: SUCCESS
"""


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace with keys/signer.{key,pub}, `signing:` configured, and one signed bundle."""
    root = signed_workspace(tmp_path_factory.mktemp("signing"))
    return root, run(root)


def public_key_id(pub: Path) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: what `openssl pkey -pubin -outform DER | sha256sum` prints."""
    body = "".join(line for line in pub.read_text().splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def test_keys_generate_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    """NAME.key is mode 0600 PKCS#8, NAME.pub a PEM public key; the key id is printed; nothing is overwritten."""
    done = cli(tmp_path, "keys", "generate", "ops", "--dir", "k", check=0)
    private, public = tmp_path / "k" / "ops.key", tmp_path / "k" / "ops.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert public_key_id(public) in done.stdout
    assert private.read_text() not in done.stdout + done.stderr
    again = cli(tmp_path, "keys", "generate", "ops", "--dir", "k", check=2)
    assert "already exists" in again.stderr


def test_a_signed_bundle_carries_a_dsse_envelope_over_every_file(signed: tuple[Path, Path]) -> None:
    """payloadType application/vnd.in-toto+json; a Statement v1 with one subject per other file and its sha256."""
    root, bundle = signed
    envelope = json.loads((bundle / "attestation.dsse.json").read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [public_key_id(root / "keys" / "signer.pub")]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    files = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in bundle.rglob("*") if p.is_file() and p.name != "attestation.dsse.json"}
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == files
    assert {"events.jsonl", "manifest.json", "report.md", "report.html"} <= set(files)
    assert statement["predicate"]["run_id"] == bundle.name


def test_verify_with_the_public_key_names_the_signer(signed: tuple[Path, Path]) -> None:
    """--key PUB: exit 0 naming the key id; without --key: OK but says the signature went unchecked."""
    root, bundle = signed
    kid = public_key_id(root / "keys" / "signer.pub")
    checked = cli(root, "evidence", "verify", bundle.name, "--key", "keys/signer.pub", check=0)
    assert f"signature valid: Ed25519 key id {kid}" in checked.stdout
    unchecked = cli(root, "evidence", "verify", bundle.name, check=0)
    assert "signature NOT checked" in unchecked.stdout and kid in unchecked.stdout


def test_verify_with_another_key_fails_naming_both(signed: tuple[Path, Path], tmp_path: Path) -> None:
    """A key that did not sign the bundle: exit 30 naming the signer's key id."""
    root, bundle = signed
    cli(tmp_path, "keys", "generate", "other", check=0)
    done = cli(root, "evidence", "verify", bundle.name, "--key", str(tmp_path / "other.pub"), check=30)
    assert public_key_id(root / "keys" / "signer.pub") in done.stderr and "not by any key given" in done.stderr


def test_an_envelope_resigned_by_a_forger_fails(signed: tuple[Path, Path], tmp_path: Path) -> None:
    """A forger reseals the bundle with the engine's own code under their own key: consistent without a key,
    exit 30 with the real signer's."""
    from tests.trust.helpers import reseal

    root, pristine = signed
    bundle = tmp_path / pristine.name
    shutil.copytree(pristine, bundle)
    cli(tmp_path, "keys", "generate", "forger", check=0)
    reseal(bundle, key=tmp_path / "forger.key")
    from engine.evidence import verify_bundle

    assert verify_bundle(bundle)["signature"] == {"signed": True, "checked": False, "keyid": public_key_id(
        tmp_path / "forger.pub"), "key": None}  # self-consistent: only the key (or the state directory) tells
    done = cli(root, "evidence", "verify", str(bundle), "--key", "keys/signer.pub", check=30)
    assert "attestation.dsse.json" in done.stderr and "not by any key given" in done.stderr


def test_an_envelope_of_another_run_fails(signed: tuple[Path, Path], tmp_path: Path) -> None:
    """Another genuinely signed bundle's attestation copied in: its subjects do not match (exit 30)."""
    root, pristine = signed
    other = run(root)
    bundle = tmp_path / pristine.name
    shutil.copytree(pristine, bundle)
    shutil.copy(other / "attestation.dsse.json", bundle / "attestation.dsse.json")
    for key in ([], ["--key", "keys/signer.pub"]):
        done = cli(root, "evidence", "verify", str(bundle), *key, check=30)
        assert "attestation" in done.stderr


def test_securesystemslib_verifies_our_envelope(signed: tuple[Path, Path]) -> None:
    """A third party's DSSE implementation accepts the envelope with the public key alone."""
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    root, bundle = signed
    public = serialization.load_pem_public_key((root / "keys" / "signer.pub").read_bytes())
    key = SSlibKey.from_crypto(public, keyid=public_key_id(root / "keys" / "signer.pub"))  # type: ignore[arg-type]
    envelope = Envelope.from_dict(json.loads((bundle / "attestation.dsse.json").read_text()))
    assert set(envelope.verify([key], 1)) == {key.keyid}
    assert json.loads(envelope.payload)["_type"] == "https://in-toto.io/Statement/v1"


def test_the_standalone_verifier_in_docs_checks_a_bundle(signed: tuple[Path, Path], tmp_path: Path) -> None:
    """docs/verify_bundle.py (stdlib + cryptography): 0 on an intact bundle, 30 on an edited artifact."""
    root, pristine = signed
    script = str(REPO / "docs" / "verify_bundle.py")
    ok = subprocess.run([sys.executable, "-I", script, str(pristine), str(root / "keys" / "signer.pub")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "signature valid" in ok.stdout, ok.stdout + ok.stderr
    bundle = tmp_path / pristine.name
    shutil.copytree(pristine, bundle)
    next((bundle / "artifacts").iterdir()).write_text("changed\n")
    bad = subprocess.run([sys.executable, "-I", script, str(bundle), str(root / "keys" / "signer.pub")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 30 and bad.stdout.startswith("FAIL"), bad.stdout + bad.stderr


def test_the_signing_key_never_reaches_a_step_or_any_file(tmp_path: Path) -> None:
    """A step that prints its whole environment and runbook.yaml: the private key is in no file the engine wrote
    and in nothing it printed, in PEM, base64, raw hex or raw bytes."""
    from cryptography.hazmat.primitives import serialization

    root = signed_workspace(tmp_path, LEAKY, "leaky")
    done = cli(root, "run", "leaky", "--no-input", "--output", "json", check=0)
    pem = (root / "keys" / "signer.key").read_bytes()
    raw = serialization.load_pem_private_key(pem, password=None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    body = b"".join(pem.splitlines()[1:-1])
    needles = [pem, body, raw, raw.hex().encode(), base64.b64encode(raw)]
    written = [p for folder in ("evidence", ".runbook") for p in (root / folder).rglob("*") if p.is_file()]
    assert written
    for path in written:
        data = path.read_bytes()
        assert not any(n in data for n in needles), path
    printed = (done.stdout + done.stderr).encode()
    assert not any(n in printed for n in needles)
    assert "signature valid" in cli(root, "evidence", "verify", json.loads(done.stdout)["run_id"],
                                    "--key", "keys/signer.pub", check=0).stdout


def test_a_missing_signing_key_stops_before_anything_runs(tmp_path: Path) -> None:
    """`signing: {key: ...}` naming no file, or a public key: exit 20 naming the setting; nothing runs."""
    root = signed_workspace(tmp_path)
    for key in ("keys/nowhere.key", "keys/signer.pub"):
        (root / "runbook.yaml").write_text(f"signing: {{key: {key}}}\n")
        done = cli(root, "run", "audited", "--no-input", check=20)
        assert "signing.key" in done.stderr and key.split("/")[1] in done.stderr
        assert not (root / "out.txt").exists() and not (root / "evidence").exists()


def test_hmac_signing_is_retired(tmp_path: Path) -> None:
    """RUNBOOK_SIGNING_KEY no longer signs anything: no `signature` in the manifest, no attestation without
    `signing:`, and verify says the bundle is not signed."""
    root = tmp_path
    (root / "runbooks").mkdir()
    (root / "runbooks" / "audited.yaml").write_text((REPO / "tests" / "trust" / "helpers.py").read_text()
                                                    .split('AUDITED = """', 1)[1].split('"""', 1)[0].lstrip()
                                                    .replace("\\\\n", "\\n"))
    done = subprocess.run([str(Path(sys.executable).with_name("runbook")), "run", "audited", "--no-input",
                           "--output", "json"], cwd=root, capture_output=True, text=True, timeout=60,
                          env={**__import__("tests.trust.helpers", fromlist=["env"]).env(),
                               "RUNBOOK_SIGNING_KEY": "legacy-hmac-key"})
    assert done.returncode == 0, done.stderr
    assert "RUNBOOK_SIGNING_KEY is set, but HMAC signing is retired" in done.stderr
    assert "legacy-hmac-key" not in done.stdout + done.stderr
    bundle = Path(json.loads(done.stdout)["evidence_dir"])
    assert "signature" not in json.loads((bundle / "manifest.json").read_text())
    assert not (bundle / "attestation.dsse.json").exists()
    assert "not signed" in cli(root, "evidence", "verify", bundle.name, check=0).stdout
