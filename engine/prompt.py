"""A line typed at the terminal, in a wait that Ctrl-C and SIGTERM always cut short.

`input()` blocks in C: a signal that lands between writing its prompt and entering `read()` only
runs its Python handler after the next line is typed, so a Ctrl-C at a prompt could hang the run.
Here the wait is `select()` on the terminal and on the signal wakeup fd, which the C-level signal
handler writes to, so a signal is seen however early it lands. The terminal stays in canonical
mode: the kernel does the line editing, Ctrl-D at the start of a line is the end of input.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading

from engine import signals


def ask_line(prompt: str) -> str:
    """The next line typed (without its newline); EOFError at end of input, signals.Interrupted on a signal."""
    if not sys.stdin.isatty() or threading.current_thread() is not threading.main_thread():
        return input(prompt)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)
    previous = signal.set_wakeup_fd(wake)
    try:
        return _read_line(sys.stdin.fileno(), woken)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(woken)
        os.close(wake)


def _read_line(terminal: int, woken: int) -> str:
    typed = b""
    while b"\n" not in typed:
        ready, _, _ = select.select([terminal, woken], [], [])
        if woken in ready:
            os.read(woken, 512)
            signals.check()
        if terminal in ready:
            chunk = os.read(terminal, 4096)
            if not chunk:
                raise EOFError
            typed += chunk
    return typed.split(b"\n", 1)[0].decode(errors="replace")
