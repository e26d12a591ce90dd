"""The fixtures every part of the coordination conformance suite uses, built on the one a backend provides."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pilotdata.coordination import Coordination, connect

MakeCoordination = Callable[..., Coordination]
"""``make()`` opens another handle on the backend under test in the test's namespace; ``make(ns)`` in ``ns``."""


class ConformanceBase:
    """Gives the suite ``make`` and ``coord`` from the backend's ``backend_url`` and the test's ``namespace``."""

    @pytest.fixture
    def make(self, backend_url: str, namespace: str) -> Iterator[MakeCoordination]:
        """Open another handle on the same backend (``make()``: same namespace; ``make("x")``: namespace x)."""
        opened: list[Coordination] = []

        def factory(ns: str | None = None) -> Coordination:
            coordination = connect(backend_url, ns or namespace)
            opened.append(coordination)
            return coordination

        yield factory
        for coordination in opened:
            coordination.close()

    @pytest.fixture
    def coord(self, make: MakeCoordination) -> Coordination:
        """A coordination handle on the backend under test, in a fresh namespace."""
        return make()
