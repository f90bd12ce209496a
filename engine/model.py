"""Frozen value objects the interpreter works on: Runbook, one Step class per kind, Duration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.vocabulary import Outcome


@dataclass(frozen=True)
class Retry:
    """How often a failed step is tried again, and how long to wait between tries."""

    attempts: int = 1
    delay_s: float = 0.0
    backoff: float = 1.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2, 3, ...)."""
        return self.delay_s * (self.backoff ** max(0, attempt - 2))


@dataclass(frozen=True)
class LockSpec:
    """`lock:` of a runbook (SPEC 4, Locks)."""

    name: str
    ttl_s: float = 1800.0
    wait_s: float = 0.0
    on_held: str = "fail"


@dataclass(frozen=True)
class Step:
    """Fields common to every step kind."""

    id: str
    line: int = 0
    col: int = 0
    title: str | None = None
    when: str | None = None
    with_: Any = None
    expect: str | None = None
    on_fail: str | None = None
    goto: str | None = None
    timeout_s: float | None = None
    retry: Retry = field(default_factory=Retry)
    rollback: str | None = None
    for_each: str | None = None
    fail: str | None = None
    evidence: tuple[str, ...] = ()
    mutates: bool = False
    safe_in_halt: bool = False
    message: str | None = None
    durations: tuple[tuple[str, str], ...] = ()  # (field, template) resolved when the step runs

    kind = "step"


@dataclass(frozen=True)
class CheckStep(Step):
    """`check: NAME` - a read-only plugin (or a mutating one with `mutates: true`)."""

    plugin: str = ""
    kind = "check"


@dataclass(frozen=True)
class ActionStep(Step):
    """`action: NAME` - a mutating plugin; planned, not run, in dry-run."""

    plugin: str = ""
    mutates: bool = True
    kind = "action"


@dataclass(frozen=True)
class Branch:
    """One `decide` branch; `condition` is None for `else`."""

    condition: str | None
    goto: str


@dataclass(frozen=True)
class DecideStep(Step):
    """`decide: [...]` - the first branch whose `if` holds wins."""

    branches: tuple[Branch, ...] = ()
    kind = "decide"


@dataclass(frozen=True)
class ApproveStep(Step):
    """`approve: {prompt, approvers, four_eyes, binds}` - a human gate (binds: actions whose plans it approves)."""

    prompt: str = ""
    approvers: tuple[str, ...] = ()
    four_eyes: bool = False
    binds: tuple[str, ...] = ()
    kind = "approve"


@dataclass(frozen=True)
class WaitStep(Step):
    """`wait: {check, with, until, every, timeout}` - poll a check until a condition holds."""

    plugin: str = ""
    plugin_with: Any = None
    until: str = "true"
    every_s: float = 5.0
    wait_timeout_s: float = 300.0
    kind = "wait"


@dataclass(frozen=True)
class CallStep(Step):
    """`call: RUNBOOK` - run another runbook with `with:` as its params."""

    runbook: str = ""
    kind = "call"


@dataclass(frozen=True)
class EndStep(Step):
    """`end: OUTCOME` - stop the run."""

    outcome: Outcome = Outcome.SUCCESS
    kind = "end"


STEP_KINDS: dict[str, type[Step]] = {
    "check": CheckStep,
    "action": ActionStep,
    "decide": DecideStep,
    "approve": ApproveStep,
    "wait": WaitStep,
    "call": CallStep,
    "end": EndStep,
}


@dataclass(frozen=True)
class Runbook:
    """A validated runbook file."""

    name: str
    title: str
    version: int
    path: Path
    sha256: str
    steps: tuple[Step, ...]
    description: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    lock: LockSpec | None = None
    idempotency_key: str | None = None
    default_fail: Outcome | None = None

    def step(self, step_id: str) -> Step:
        """The step with that id."""
        return self._index()[step_id]

    def next_of(self, step: Step) -> str | None:
        """The id of the step after `step` in the file, None after the last one."""
        position = self._positions()[step.id]
        return self.steps[position + 1].id if position + 1 < len(self.steps) else None

    def _index(self) -> dict[str, Step]:
        cached = self.__dict__.get("_by_id")
        if cached is None:
            cached = {s.id: s for s in self.steps}
            object.__setattr__(self, "_by_id", cached)
        return cached

    def _positions(self) -> dict[str, int]:
        cached = self.__dict__.get("_pos")
        if cached is None:
            cached = {s.id: i for i, s in enumerate(self.steps)}
            object.__setattr__(self, "_pos", cached)
        return cached

    def param_defaults(self) -> dict[str, Any]:
        """Params with a default value."""
        return {k: v["default"] for k, v in self.params.items() if isinstance(v, dict) and "default" in v}
