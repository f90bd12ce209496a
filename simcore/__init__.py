"""simcore: a deterministic paper-trading core that the runbooks operate (seeds 000 and 002)."""

__version__ = "0.1.0"
