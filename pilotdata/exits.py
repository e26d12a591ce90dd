"""How a process ended, in words: signal names and exit reasons.

Shared by the launchers (a batch job's exit) and the agent (a ComputeUnit's exit), which sit in
different layers; this module imports nothing of the project, so both may use it.
"""

from __future__ import annotations

import signal


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15, ``signal 99`` for numbers with no name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_reason(code: int) -> str:
    """``exit code 3``, or ``killed by signal SIGKILL`` for a negative (Popen-style) return code."""
    return f"killed by signal {signal_name(-code)}" if code < 0 else f"exit code {code}"
