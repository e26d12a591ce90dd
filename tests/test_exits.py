"""How a process ended, in words: the reason a CU or a pilot's job records."""

from __future__ import annotations

from pilotdata.exits import exit_reason, signal_name


def test_exit_reason() -> None:
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(-9) == "killed by signal SIGKILL"


def test_a_signal_without_a_name_is_named_by_its_number() -> None:
    assert signal_name(15) == "SIGTERM"
    assert signal_name(99) == "signal 99"
