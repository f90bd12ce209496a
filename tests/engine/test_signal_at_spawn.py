"""A stop signal that lands the instant a step's child has started still stops that child's process group.

Under load the engine can be descheduled right after `Popen` returns; a SIGINT raised there used to leave
the step's command running after the run had paused (seen in test_locks' mid-step signal test). The signal
is sent here at exactly that instant, from inside Popen.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import signals
from tests.durability.helpers import alive, wait_for
from transports import process


@pytest.fixture
def stop_signals() -> Iterator[None]:
    """The engine's SIGINT/SIGTERM handling, installed in this process for one test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals._state.update(pending=None, interruptible=0, installed=False)
    signals.install()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    signals._state.update(pending=None, interruptible=0, installed=False)


def test_a_signal_inside_the_uninterrupted_block_waits_for_its_end(stop_signals: None) -> None:
    reached = []
    with pytest.raises(signals.Interrupted), signals.interruptible():
        with signals.uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the signal")
        reached.append("after the block")
    assert reached == ["after the signal"]


def test_a_signal_right_after_the_child_starts_kills_its_process_group(stop_signals: None, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_popen = subprocess.Popen
    started: list[int] = []

    def popen_then_signal(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = real_popen(*args, **kwargs)
        started.append(child.pid)
        os.kill(os.getpid(), signal.SIGINT)  # lands before run_command has a name for the child
        return child

    monkeypatch.setattr(process.subprocess, "Popen", popen_then_signal)
    with pytest.raises(signals.Interrupted), signals.interruptible():
        process.run_command(["sleep", "30"], cwd=str(tmp_path))
    assert started
    wait_for(lambda: not alive(started[0]), what="the step's child to be killed")

