"""Ed25519 key pairs for signing evidence: `runbook keys generate`, loading, key ids.

A key id is the sha256 (hex) of the public key's DER SubjectPublicKeyInfo, so
anyone holding the `.pub` file computes the same id (`openssl pkey -pubin -outform DER | sha256sum`).
Private keys are read only when a bundle is sealed and never leave this process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InvalidRunbook, Problem, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


def key_id(public: Ed25519PublicKey) -> str:
    """sha256 hex of the public key's DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def generate(name: str, directory: Path) -> tuple[Path, Path, str]:
    """Write DIR/NAME.key (PKCS#8 PEM, mode 0600) and DIR/NAME.pub (PEM); refuse to overwrite either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"key name {name!r}: expected a plain file name such as 'evidence-signer'")
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} already exists; choose another name or move it away")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    public = private.public_key()
    public_path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path, key_id(public)


def load_private(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; DATA_INVALID naming the file when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise InvalidRunbook([Problem(str(path), None, None, None, f"signing key unreadable: {exc.strerror}")]) from None
    except (ValueError, TypeError):
        raise InvalidRunbook([Problem(str(path), None, None, None,
                                      "not an unencrypted PEM private key (make one with `runbook keys generate`)")]) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidRunbook([Problem(str(path), None, None, None, "signing key is not an Ed25519 key")])
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file; a usage error naming the file when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"--key {path}: {exc.strerror}") from None
    except ValueError:
        raise UsageError(f"--key {path}: not a PEM public key (the .pub file of `runbook keys generate`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"--key {path}: not an Ed25519 public key")
    return key


def check_private(path: Path) -> str | None:
    """Why `path` cannot sign bundles (missing, unreadable, not an unencrypted Ed25519 PEM key), or None."""
    if not path.is_file():
        return f"{path} is not a file (make a key pair with `runbook keys generate NAME`)"
    try:
        load_private(path)
    except InvalidRunbook as exc:
        return f"{path}: {exc.problems[0].message}"
    return None
