"""Where every file of a core directory lives (the seed systems' own relative paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_NAME = "XAUUSD_M1_live.csv"


@dataclass(frozen=True)
class Layout:
    """Paths of one core directory, created by `simcore init DIR`."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def settings(self) -> Path:
        return self.config_dir / "settings.yaml"

    @property
    def schema(self) -> Path:
        return self.config_dir / "schema.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def world_db(self) -> Path:
        """The simulated exchange, market and clock (survives `rebuild-db`)."""
        return self.state_dir / "world.db"

    @property
    def core_lock(self) -> Path:
        return self.state_dir / ".core.lock"

    @property
    def csv(self) -> Path:
        return self.root / "data" / "live" / CSV_NAME

    @property
    def meta_states(self) -> Path:
        return self.root / "data" / "meta_states"

    @property
    def ledger(self) -> Path:
        return self.meta_states / "ledger.jsonl"

    @property
    def current_state(self) -> Path:
        return self.meta_states / "current.json"

    @property
    def lock_file(self) -> Path:
        return self.meta_states / ".locks" / "meta_cycle.lock"

    @property
    def incidents(self) -> Path:
        return self.root / "data" / "reports" / "incidents"

    @property
    def meta_log(self) -> Path:
        return self.root / "logs" / "meta_cycle.jsonl"

    @property
    def metrics_log(self) -> Path:
        return self.root / "logs" / "metrics.log"

    @property
    def kill_switch(self) -> Path:
        return self.root / "KILL_SWITCH"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    def db_path(self, settings: dict[str, Any]) -> Path:
        """The SQLite state file named by settings `db_path` (relative to the root)."""
        p = Path(str(settings.get("db_path", "state/core.db")))
        return p if p.is_absolute() else self.root / p
