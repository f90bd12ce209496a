"""SPEC 5: `evidence verify` exits 30 naming the first broken record or file, with or without a key.

Every case is what a forger without the signing key can do: change something,
then fix up manifest.json's hashes (and worse) so the manifest alone looks right.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from tests.trust.helpers import (
    edit_manifest,
    refresh_manifest,
    rehash_line,
    reseal,
    run,
    signed_workspace,
)


def _artifact(bundle: Path, suffix: str = "look-stdout.txt") -> Path:
    return next(p for p in (bundle / "artifacts").iterdir() if p.name.endswith(suffix))


def replace_artifact(bundle: Path) -> None:
    _artifact(bundle).write_text("level 9\n")
    refresh_manifest(bundle)


def add_file(bundle: Path) -> None:
    (bundle / "artifacts" / "000099-look-extra.txt").write_text("planted\n")
    refresh_manifest(bundle)


def remove_artifact(bundle: Path) -> None:
    _artifact(bundle, "look-stderr.txt").unlink()
    refresh_manifest(bundle)


def remove_report(bundle: Path) -> None:
    (bundle / "report.md").unlink()
    refresh_manifest(bundle)


def edit_report(name: str) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        path = bundle / name
        path.write_text(path.read_text().replace("SUCCESS", "BUSINESS_REJECT", 1))
        refresh_manifest(bundle)
    return tamper


def remove_attestation(bundle: Path) -> None:
    (bundle / "attestation.dsse.json").unlink()
    refresh_manifest(bundle)


def edit_event_bytes(bundle: Path) -> None:
    path = bundle / "events.jsonl"
    path.write_text(path.read_text().replace('"level":3', '"level":9', 1))


def edit_event_rehashed(bundle: Path) -> None:
    rehash_line(bundle, 0, {"params": {"level": 9}})


def rewrite_the_end(bundle: Path) -> None:
    """The strongest forger without a key: rewrite run_finished and seal again with the engine's own code."""
    reseal(bundle, run_finished={"outcome": "BUSINESS_REJECT", "exit_code": 10, "message": "forged"})
    assert json.loads((bundle / "manifest.json").read_text())["outcome"] == "BUSINESS_REJECT"


def append_after_seal(bundle: Path) -> None:
    """A chain-valid record appended after the seal, the manifest's last hash and count fixed."""
    from engine.evidence import EventLog
    from engine.redact import Redactor

    log = EventLog(bundle, Redactor())
    record = log.record("approval", "route", {"decision": "approved", "by": "mallory"})
    log.close()
    edit_manifest(bundle, last_event_hash=record["hash"], event_count=record["seq"])
    refresh_manifest(bundle)


CASES: dict[str, tuple[Callable[[Path], None], str | tuple[str, str]]] = {
    "artifact replaced, manifest sha fixed": (replace_artifact, "artifact event"),
    "params edited": (lambda b: edit_manifest(b, params={"level": 9}), "manifest.json: params"),
    "ended_at edited": (lambda b: edit_manifest(b, ended_at="2020-01-01T00:00:00.000000Z"), "manifest.json: ended_at"),
    "started_at edited": (lambda b: edit_manifest(b, started_at="2020-01-01T00:00:00.000000Z"), "manifest.json: started_at"),
    "host edited": (lambda b: edit_manifest(b, host="elsewhere"), "manifest.json: host"),
    "outcome edited": (lambda b: edit_manifest(b, outcome="BUSINESS_REJECT", exit_code=10), "manifest.json: exit_code"),
    "operator edited": (lambda b: edit_manifest(b, operator="mallory"), "manifest.json: operator"),
    "trigger added": (lambda b: edit_manifest(b, trigger={"alert": "x"}), "manifest.json: trigger"),
    "field added": (lambda b: edit_manifest(b, approved_by="alice"), "field 'approved_by' is not backed"),
    "field removed": (lambda b: edit_manifest(b, drop=("mode",)), "manifest.json: mode"),
    "manifest reformatted": (lambda b: (b / "manifest.json").write_text(
        json.dumps(json.loads((b / "manifest.json").read_text()))), "manifest.json: not byte for byte"),
    "file added, manifest fixed": (add_file, "000099-look-extra.txt: no artifact event"),
    "file added": (lambda b: (b / "notes.txt").write_text("x"), "notes.txt"),
    "artifact removed, manifest fixed": (remove_artifact, "look-stderr.txt: artifact recorded"),
    "report.md removed, manifest fixed": (remove_report, "report.md: missing"),
    "report.md edited, manifest fixed": (edit_report("report.md"), "report.md: edited after sealing"),
    "report.html edited, manifest fixed": (edit_report("report.html"), "report.html: edited after sealing"),
    "attestation removed, manifest fixed": (remove_attestation, "attestation.dsse.json: missing, but the bundle was sealed signed"),
    "record appended after the seal": (append_after_seal, "does not end with its bundle_sealed record"),
    "event edited": (edit_event_bytes, "events.jsonl:1: record seq 1 was modified"),
    "event edited and rehashed": (edit_event_rehashed, "events.jsonl:2: record seq 2 does not follow"),
    # without a key only the state directory's last hash betrays it; with one, the missing signature
    "run end rewritten and resealed": (rewrite_the_end, ("events.jsonl: last record hash differs",
                                                         "attestation.dsse.json: missing")),
}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace with a signing key and one signed SUCCESS bundle."""
    root = signed_workspace(tmp_path_factory.mktemp("tamper"))
    return root, run(root)


def verify(root: Path, bundle: Path, key: bool, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`runbook evidence verify BUNDLE [--key keys/signer.pub]` run in `root`."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("RUNBOOK_CONFIG", raising=False)
    code = main(["evidence", "verify", str(bundle), *(["--key", "keys/signer.pub"] if key else [])])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("key", [False, True], ids=["without-key", "with-key"])
def test_an_intact_signed_bundle_verifies(signed: tuple[Path, Path], key: bool, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Untouched: exit 0, and the line says whether the signature was checked."""
    root, bundle = signed
    code, text = verify(root, bundle, key, capsys, monkeypatch)
    assert code == 0, text
    assert ("signature valid" in text) == key
    assert ("signature NOT checked" in text) == (not key)


@pytest.mark.parametrize("key", [False, True], ids=["without-key", "with-key"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_tampering_is_detected(signed: tuple[Path, Path], tmp_path: Path, case: str, key: bool,
                                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each edit: exit 30, naming the broken record or file."""
    root, pristine = signed
    bundle = tmp_path / pristine.name
    shutil.copytree(pristine, bundle)
    tamper, named = CASES[case]
    tamper(bundle)
    code, text = verify(root, bundle, key, capsys, monkeypatch)
    assert code == 30, text
    assert any(n in text for n in ((named,) if isinstance(named, str) else named)), text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_of_any_file_is_detected(signed: tuple[Path, Path], tmp_path: Path,
                                                  data: st.DataObject) -> None:
    """XOR any byte of any file of a signed bundle with any non-zero mask: StateCorrupt. Without a key the
    attestation is left out: its signature bytes are exactly what only a key can check."""
    from engine.errors import StateCorrupt
    from engine.evidence import verify_bundle
    from engine.keys import load_public

    root, pristine = signed
    with_key = data.draw(st.booleans(), label="with key")
    names = sorted(p.relative_to(pristine).as_posix() for p in pristine.rglob("*") if p.is_file()
                   and (with_key or p.name != "attestation.dsse.json"))
    name = data.draw(st.sampled_from(names), label="file")
    size = (pristine / name).stat().st_size
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="byte")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    bundle = tmp_path / "copy" / pristine.name
    if bundle.parent.exists():
        shutil.rmtree(bundle.parent)
    shutil.copytree(pristine, bundle)
    raw = bytearray((bundle / name).read_bytes())
    raw[index] ^= mask
    (bundle / name).write_bytes(bytes(raw))
    keys = [("signer.pub", load_public(root / "keys" / "signer.pub"))] if with_key else []
    with pytest.raises(StateCorrupt):
        verify_bundle(bundle, keys)


@pytest.mark.parametrize("name", ["manifest.json", "attestation.dsse.json"])
def test_a_newline_turned_carriage_return_is_detected(signed: tuple[Path, Path], tmp_path: Path, name: str) -> None:
    """Files are compared as written: reading them as text would turn '\\r' back into '\\n' (found by the
    property test above: byte 1 of the attestation XOR 7)."""
    from engine.errors import StateCorrupt
    from engine.evidence import verify_bundle
    from engine.keys import load_public

    root, pristine = signed
    bundle = tmp_path / pristine.name
    shutil.copytree(pristine, bundle)
    raw = (bundle / name).read_bytes()
    (bundle / name).write_bytes(raw.replace(b"\n", b"\r", 1))
    with pytest.raises(StateCorrupt, match="edited|not byte for byte|modified"):
        verify_bundle(bundle, [("signer.pub", load_public(root / "keys" / "signer.pub"))])
