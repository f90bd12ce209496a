"""SIGTERM and Ctrl-C: stop between steps where possible, interrupt a running step otherwise.

The handler never interrupts the engine while it writes a record: outside an
`interruptible()` block it only sets a flag that the loop checks between steps.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """The run was asked to stop by a signal (a BaseException so plugin error handling cannot swallow it)."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


_state: dict[str, Any] = {"pending": None, "interruptible": 0, "installed": False}


def _handler(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    _state["pending"] = name
    if _state["interruptible"]:
        raise Interrupted(name)


def install() -> None:
    """Route SIGTERM and SIGINT to the run (main thread only)."""
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    _state["installed"] = True


def check() -> None:
    """Raise Interrupted if a signal arrived since the last check."""
    name = _state["pending"]
    if name:
        raise Interrupted(name)


@contextmanager
def interruptible() -> Iterator[None]:
    """A block (a plugin call, a sleep) that a signal may cut short."""
    check()
    _state["interruptible"] += 1
    try:
        yield
    finally:
        _state["interruptible"] -= 1


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block a signal must not cut in two (a child process started and not yet tracked): a signal that
    arrives inside it waits for its end, and is raised there if the block sits in an interruptible one."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    saved = _state["interruptible"]
    _state["interruptible"] = 0
    try:
        yield
    finally:
        _state["interruptible"] = saved
    if saved:
        check()


def reset() -> None:
    """Forget a handled signal (tests, and nested runs in one process)."""
    _state["pending"] = None
