"""Keeping secrets out of evidence: `env:` values and credential-looking strings."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_SECRET_CHARS = 4

_SECRET_KEY = re.compile(
    r"(?i)(passw(or)?d|passwd|secret|api[_-]?key|apikey|authorization|private[_-]?key|access[_-]?key|"
    r"access[_-]?token|auth[_-]?token|refresh[_-]?token|bearer|credential|session[_-]?token)"
)
# HTTP header names that carry credentials (Authorization, Cookie, X-MBX-APIKEY, X-Signature, ...); an
# Idempotency-Key is the run's token, not a credential.
_CREDENTIAL_HEADER = re.compile(r"(?i)auth|cookie|token|secret|key|sign|pass")
_NOT_CREDENTIAL_HEADERS = frozenset({"idempotency-key"})


@functools.cache
def _credential_patterns() -> tuple[re.Pattern[str], ...]:
    """The patterns of credential-looking text, compiled by the first text that may hold one."""
    return (
        re.compile(r"(?i)\b((?:[a-z0-9]+[_-])*(?:passw(?:or)?d|passwd|secret|api[_-]?key|apikey|private[_-]?key|"
                   r"access[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|credential)s?)"
                   r"(\"?\s*[:=]\s*\"?)([^\s\"',;&}]+)"),
        re.compile(r"(?i)\b(authorization\"?\s*[:=]\s*\"?(?:bearer|basic|token)?\s*)([A-Za-z0-9._~+/=-]{6,})"),
        re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
        re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
        re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,}|xox[abposr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9]{20,})\b"),
        re.compile(r"(?i)(://[^/\s:@]+:)([^@\s/]+)(@)"),
    )


_REGISTERED: set[str] = set()


def register(secrets: Iterable[str]) -> None:
    """Make values secret for every Redactor of this process and for `mask` (what the engine prints)."""
    _REGISTERED.update(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)


def credential_name(name: str) -> bool:
    """True for a name that holds a credential (`api_key`, `password`, `auth_token`, ...)."""
    return bool(_SECRET_KEY.search(name))


def credential_header(name: str) -> bool:
    """True for an HTTP header whose value is a credential (`Authorization`, `Cookie`, `X-Api-Key`, ...)."""
    return bool(_CREDENTIAL_HEADER.search(name)) and name.lower() not in _NOT_CREDENTIAL_HEADERS


def encodings(secret: str) -> list[str]:
    """The forms a secret takes in what the engine writes: as is, JSON-escaped, URL-quoted, base64, hex."""
    import base64
    from urllib.parse import quote, quote_plus

    raw = secret.encode("utf-8", errors="surrogatepass")
    forms = [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe=""),
             quote_plus(secret), base64.b64encode(raw).decode().rstrip("="),
             base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper()]
    return [f for f in dict.fromkeys(forms) if len(f) >= MIN_SECRET_CHARS]


def mask(text: str) -> str:
    """`text` with every registered secret and credential-looking substring masked (for printing)."""
    global _MASKER
    known, redactor = _MASKER
    if known != _REGISTERED:
        known, redactor = frozenset(_REGISTERED), Redactor()
        _MASKER = known, redactor
    return redactor.text(text)


class Redactor:
    """Replaces known secret values (in any encoding the engine produces) and credential-looking text with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS} | _REGISTERED
        self.secrets = sorted({form for s in known for form in encodings(s)}, key=len, reverse=True)
        self._needles = self.secrets

    def needs_redaction(self, serialized: str) -> bool:
        """False when a serialized record holds no secret and nothing credential-like (the common case)."""
        return any(map(serialized.__contains__, self._needles)) or _maybe_credential(serialized)

    def text(self, value: str) -> str:
        """A string with every secret and credential-looking substring masked."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if not _maybe_credential(value):
            return value
        for pattern in _credential_patterns():
            value = pattern.sub(_mask_match, value)
        return value

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """HTTP headers as they may be shown: a credential header's value, or any secret in a value, masked."""
        return {name: MASK if credential_header(name) else self.text(value) for name, value in headers.items()}

    def data(self, value: Any) -> Any:
        """A JSON-ready copy of `value`: secrets masked, keys made strings, tuples made lists."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                key = str(k)
                out[key] = MASK if (_SECRET_KEY.search(key) and isinstance(v, (str, int, float)) and v != "") else self.data(v)
            return out
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))


_MASKER: tuple[frozenset[str], Redactor] = (frozenset(), Redactor())
_HINTS = ("pass", "secret", "key", "token", "auth", "bearer", "akia", "asia", "private", "gh", "xox", "sk-", "://", "credential")


def _maybe_credential(value: str) -> bool:
    return any(map(value.lower().__contains__, _HINTS))


def _mask_match(match: re.Match[str]) -> str:
    groups = match.groups()
    if len(groups) >= 3 and match.re.pattern.startswith("(?i)(://"):
        return f"{groups[0]}{MASK}{groups[2]}"
    if len(groups) == 3:
        return f"{groups[0]}{groups[1]}{MASK}"
    if len(groups) == 2 and groups[0] and not groups[0].startswith(("AKIA", "ASIA")):
        return f"{groups[0]}{MASK}"
    return MASK
