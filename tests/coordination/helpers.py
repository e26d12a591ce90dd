"""Small helpers shared by the coordination tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pilotdata.coordination import Coordination

PATH_TO: dict[str, list[str]] = {
    "New": [],
    "Pending": ["Pending"],
    "StagingInput": ["Pending", "StagingInput"],
    "Running": ["Pending", "StagingInput", "Running"],
    "StagingOutput": ["Pending", "StagingInput", "Running", "StagingOutput"],
    "Done": ["Pending", "StagingInput", "Running", "StagingOutput", "Done"],
    "Failed": ["Failed"],
    "Canceled": ["Canceled"],
}
"""A legal CU path from New to each state."""


def put_cu(
    coord: Coordination, cu_id: str, state: str = "New", pilot: str | None = None, **data: Any
) -> None:
    """Create CU ``cu_id`` and move it along a legal path to ``state``."""
    coord.create("cu", cu_id, data or {"description": {"executable": "/bin/true"}})
    for step in PATH_TO[state]:
        coord.transition("cu", cu_id, step, pilot=pilot)


def run_in_thread(target: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """Start ``target`` in a daemon thread; returns (thread, box) where box gets its result or exception."""
    import threading

    box: list[Any] = []

    def body() -> None:
        try:
            box.append(target())
        except BaseException as exc:  # handed to the test, which re-raises it
            box.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box
