"""The error family of simcore; the CLI and the HTTP server map each class to a code."""

from __future__ import annotations


class SimcoreError(Exception):
    """Base of every expected simcore failure."""

    http_status = 500


class BadRequest(SimcoreError):
    """The caller passed invalid arguments."""

    http_status = 400


class NotFound(SimcoreError):
    """The requested object does not exist."""

    http_status = 404


class Refused(SimcoreError):
    """The operation is illegal in the current state (safety rules, reduce-only, ...)."""

    http_status = 409


class BrokerUnavailable(SimcoreError):
    """The simulated broker cannot be reached (connectivity fault)."""

    http_status = 503

    def __init__(self, message: str, error_code: str = "TIMEOUT") -> None:
        super().__init__(message)
        self.error_code = error_code


class NotInitialized(SimcoreError):
    """The core directory has not been created with `simcore init`."""

    http_status = 500
