"""runbook-engine: declarative runbooks for trading operations."""

__version__ = "0.1.0"
