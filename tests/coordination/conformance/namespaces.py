"""The coordination conformance suite: namespaces sharing one backend are isolated; lifecycle (url, ping, close)."""

from __future__ import annotations

import pytest

from pilotdata.coordination import Coordination, connect
from pilotdata.errors import CoordinationError, DescriptionError, NotFoundError
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.helpers import put_cu


class NamespaceConformance(ConformanceBase):
    """Namespaces sharing one backend are isolated; lifecycle (url, ping, close)."""

    def test_two_namespaces_see_nothing_of_each_other(self, make: MakeCoordination, namespace: str) -> None:
        a, b = make(namespace + "a"), make(namespace + "b")
        put_cu(a, "c1", "Running", pilot="p")
        a.create("pilot", "p", {})
        a.enqueue(["c1"])
        a.enqueue(["c2"], pilot="p")
        a.heartbeat("p", 0.001)
        assert b.list_ids("cu") == [] and b.list_ids("pilot") == []
        with pytest.raises(NotFoundError):
            b.get("cu", "c1")
        with pytest.raises(NotFoundError):
            b.transition("cu", "c1", "Done")
        assert b.queued() == [] and b.queued("p") == [] and b.claim("p", limit=5) == []
        assert b.queue_lengths(["", "p"]) == {"": 0, "p": 0}
        assert not b.is_alive("p") and b.expired_pilots() == []
        assert b.events_after(None) == [] and b.last_cursor() is None
        assert b.requeue_lost("p", 3, force=True).requeued == []
        b.create("cu", "c1", {"mine": "b"})  # the same id is free in b
        assert a.get("cu", "c1").data != b.get("cu", "c1").data
        assert a.claim("p", limit=5) == ["c2", "c1"]
        assert b.claimed("p") == []

    def test_url_ping_and_close(self, coord: Coordination, backend_url: str) -> None:
        coord.ping()
        assert coord.url == backend_url  # no secret in these URLs: shown as given
        assert coord.url in repr(coord)
        coord.close()
        with pytest.raises(CoordinationError):
            coord.get("cu", "x")

    def test_context_manager_closes(self, make: MakeCoordination) -> None:
        with make() as coord:
            coord.create("cu", "x", {})
        with pytest.raises(CoordinationError):
            coord.list_ids("cu")

    @pytest.mark.parametrize("bad", ["", "a}b", "{ns}", "a b", "tab\there", "nl\n", "nul\0", "x" * 129])
    def test_every_backend_refuses_the_same_namespaces(self, backend_url: str, bad: str) -> None:
        """One rule for both (``a}b`` used to be accepted on SQLite and refused on Redis); an explicit ``""``
        is an error, not the default namespace."""
        with pytest.raises(DescriptionError, match="namespace") as info:
            connect(backend_url, bad).close()
        assert info.value.field == "namespace"

    @pytest.mark.parametrize("good", ["default", "a-b.c:1", "blast-2024", "x" * 128, "ünïcode"])
    def test_every_backend_accepts_the_same_namespaces(self, backend_url: str, good: str) -> None:
        with connect(backend_url, good) as coord:
            coord.create("cu", "c", {})
            assert coord.list_ids("cu") == ["c"]
            coord.delete("cu", "c")
