"""Conformance: namespaces sharing one backend are isolated; lifecycle (url, ping, close)."""

from __future__ import annotations

import pytest

from pilotdata.coordination import Coordination
from pilotdata.errors import CoordinationError, NotFoundError
from tests.coordination.conftest import MakeCoordination
from tests.coordination.helpers import put_cu


def test_two_namespaces_see_nothing_of_each_other(make: MakeCoordination, namespace: str) -> None:
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


def test_url_ping_and_close(coord: Coordination, backend_url: str) -> None:
    coord.ping()
    assert coord.url == backend_url  # no secret in these URLs: shown as given
    assert coord.url in repr(coord)
    coord.close()
    with pytest.raises(CoordinationError):
        coord.get("cu", "x")


def test_context_manager_closes(make: MakeCoordination) -> None:
    with make() as coord:
        coord.create("cu", "x", {})
    with pytest.raises(CoordinationError):
        coord.list_ids("cu")
