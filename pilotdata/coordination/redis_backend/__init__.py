"""Redis coordination backend: :class:`RedisCoordination` for ``redis://``, ``rediss://`` and ``unix://``.

Modules: :mod:`.backend` (the class: connection, error conversion, building script calls),
:mod:`.scripts` (the Lua that makes every state change, claim and requeue atomic). The keys are
spelled and documented in :mod:`pilotdata.coordination.keys`.

* Transitions run in a Lua script (``EVALSHA``) that checks and applies each request on its own, in
  order. The legal source states and the retry sources come from :mod:`pilotdata.states` in ``ARGV``,
  so the Python table stays the single source of truth while the check-and-write happens atomically
  on the server. A batch is split into scripts of :data:`TRANSITION_CHUNK` requests, pipelined.
* Queues are lists. :meth:`RedisCoordination.claim` moves ids with ``LMOVE`` (own queue, then the
  shared queue) into the pilot's in-progress list; when both are empty it blocks in ``BLMOVE`` on the
  shared queue in bounded slices (work arriving on the pilot's own queue is seen at the next slice).
* :meth:`RedisCoordination.requeue_lost` is one script, so of two concurrent detectors exactly one
  gets a lost pilot's work; it decides as :func:`pilotdata.coordination.requeue.plan_requeue` does.
* Events are a Redis Stream (``XADD`` / ``XTRIM MINID``; read by ``XRANGE`` in a script that returns one JSON
  text, and ``XREAD BLOCK`` to wait for new entries).
"""

from __future__ import annotations

from pilotdata.coordination.redis_backend.backend import CLAIM_BLOCK_SLICE, TRANSITION_CHUNK, RedisCoordination

__all__ = ["CLAIM_BLOCK_SLICE", "TRANSITION_CHUNK", "RedisCoordination"]
