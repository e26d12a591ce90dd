"""The behaviour every coordination backend shares, written once (as tests/stores/conformance.py is for stores).

A backend's test module provides one fixture and subclasses :class:`CoordinationConformance`::

    @pytest.fixture
    def backend_url(backend_urls: BackendURLs, tmp_path: Path) -> str:
        return ...  # a URL that pilotdata.coordination.connect() opens; tests keep apart by namespace

    class TestMyBackendConformance(CoordinationConformance):
        '''The shared coordination behaviour on my backend.'''

The suite opens handles with ``connect(backend_url, namespace)`` (fixtures ``make`` and ``coord``, see
:mod:`.base`); ``namespace`` is fresh per test (tests/conftest.py). Its parts, one module each:
:mod:`.entities`, :mod:`.transitions`, :mod:`.queues`, :mod:`.liveness`, :mod:`.requeue` (both backends
decide as :func:`pilotdata.coordination.requeue.plan_requeue`), :mod:`.ownership` (a pilot that no
longer owns a CU cannot move it; moves that enqueue atomically), :mod:`.adoption` (CUs recorded unbound
under a binder's lease, adopted when it lapses), :mod:`.events`, :mod:`.namespaces`, :mod:`.concurrency`.
"""

from __future__ import annotations

from tests.coordination.conformance.adoption import AdoptionConformance
from tests.coordination.conformance.base import ConformanceBase, MakeCoordination
from tests.coordination.conformance.concurrency import ConcurrencyConformance
from tests.coordination.conformance.entities import EntityConformance
from tests.coordination.conformance.events import EventConformance
from tests.coordination.conformance.liveness import LivenessConformance
from tests.coordination.conformance.namespaces import NamespaceConformance
from tests.coordination.conformance.ownership import OwnershipConformance
from tests.coordination.conformance.queues import QueueConformance
from tests.coordination.conformance.requeue import RequeueConformance
from tests.coordination.conformance.transitions import TransitionConformance

__all__ = ["ConformanceBase", "CoordinationConformance", "MakeCoordination"]


class CoordinationConformance(
    EntityConformance,
    TransitionConformance,
    QueueConformance,
    LivenessConformance,
    RequeueConformance,
    OwnershipConformance,
    AdoptionConformance,
    EventConformance,
    NamespaceConformance,
    ConcurrencyConformance,
):
    """Every part of the suite; a backend's test class inherits it and provides ``backend_url``."""
