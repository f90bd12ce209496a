"""The one duration grammar (`500ms`, `30s`, `5m`, `1h`, `2d`): a leaf module, cheap to import."""

from __future__ import annotations

import re

# The one duration grammar: runbook fields (timeout, retry.delay, wait.every, lock.ttl ...),
# plugin params (max_age ...) and the JSON Schemas of both use these. ASCII digits only.
DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d)$"
DURATION_EXAMPLES = "500ms, 30s, 5m, 1h, 2d"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PARTS = re.compile(r"([0-9.]+)([a-z]+)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `500ms`, `30s`, `5m`, `1h`, `2d`; ValueError otherwise."""
    valid = isinstance(text, str) and _DURATION.match(text.strip())
    parts = _DURATION_PARTS.fullmatch(text.strip()) if valid else None
    if not parts:
        raise ValueError(f"bad duration {text!r} (expected a number and a unit: {DURATION_EXAMPLES})")
    return float(parts.group(1)) * DURATION_UNITS[parts.group(2)]
