"""Every Redis key pilot-data uses, spelled in one place.

All keys of a namespace ``<ns>`` start with ``pd:{<ns>}:``. The braces are a Redis Cluster *hash tag*:
every key of one namespace hashes to the same slot, so the Lua scripts of
:mod:`pilotdata.coordination.redis_backend` may touch any of them atomically. A namespace therefore
must not contain ``{`` or ``}`` (:func:`pilotdata.coordination._codec.check_namespace`, which both
backends apply).

=====================================  ===========  ===============================  =====================
pattern                                type         owner (writer)                   TTL
=====================================  ===========  ===============================  =====================
``pd:{<ns>}:e:<kind>:<id>``            hash         create / transition / update     none (``delete``)
                                                    scripts
``pd:{<ns>}:ids:<kind>``               set          create / delete (index for       none
                                                    ``list_ids``; no key scans)
``pd:{<ns>}:q``                        list         ``enqueue`` (tail / front);      none
                                                    popped by ``claim``
``pd:{<ns>}:q:<pilot>``                list         ``enqueue(pilot=...)``, placement none
``pd:{<ns>}:qn``                       set          ``enqueue(pilot=...)``: pilots   none
                                                    that have a queue (for
                                                    ``dequeue`` / ``requeue_lost``)
``pd:{<ns>}:c:<pilot>``                list         ``claim`` (moves ids in),        none
                                                    ``release`` / ``unclaim`` /
                                                    ``requeue_lost`` (take out)
``pd:{<ns>}:hb:<pilot>``               string       ``heartbeat`` (value: time)      the heartbeat ttl
``pd:{<ns>}:live``                     set          ``heartbeat`` adds; ``retire`` / none
                                                    ``requeue_lost`` remove
``pd:{<ns>}:ub:<binder>``              sorted set   ``create_many(binder=...)``      none (``adopt_unbound``
                                                    adds (score: creation order);    deletes it)
                                                    a move out of New removes
``pd:{<ns>}:ubn``                      set          ``create_many(binder=...)``:     none
                                                    binders with unbound CUs
``pd:{<ns>}:bl:<binder>``              string       ``hold_unbound`` (value: time)   the lease ttl
``pd:{<ns>}:ev``                       stream       every transition, ``create``,    none; trimmed by the
                                                    ``record_event``                 history writer
                                                                                     (``trim_events``)
=====================================  ===========  ===============================  =====================

Entity hash fields: ``state``, ``attempt``, ``pilot``, ``created``, ``updated``, ``detail`` (JSON),
``t_<State>`` (epoch seconds the entity last entered ``<State>``), ``binder`` (a CU recorded unbound:
the binder whose set holds it, removed when it leaves New) and one ``d:<key>`` per top-level data key,
holding that value as JSON. Event stream entry fields: ``entity``, ``id``, ``from``, ``to``,
``time``, ``pilot``, ``attempt``, ``detail`` (JSON); ``from`` / ``to`` / ``pilot`` are left out when
they are ``None``. A ComputeUnit's creation event (``to`` New, no ``from``) has the detail
``{"run", "name", "slots"}`` (:func:`pilotdata.coordination._codec.creation_detail`). Nothing secret
is ever written to any of these keys.
"""

from __future__ import annotations

from pilotdata.coordination._codec import check_namespace

__all__ = ["DATA_PREFIX", "TIME_PREFIX", "RedisKeys"]

DATA_PREFIX = "d:"
"""Entity hash field prefix of a data key: ``d:<key>`` holds ``data[key]`` as JSON."""

TIME_PREFIX = "t_"
"""Entity hash field prefix of a state timestamp: ``t_<State>``."""


class RedisKeys:
    """Builds the keys of one namespace (see the module table)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = check_namespace(namespace)
        self.prefix = f"pd:{{{namespace}}}:"
        """Common prefix of every key of this namespace (with its hash tag)."""
        self.shared_queue = self.prefix + "q"
        """The shared queue (list of CU ids any pilot may claim)."""
        self.queue_prefix = self.shared_queue + ":"
        """Prefix of per-pilot queues (``+ <pilot>``); scripts build queue keys from it."""
        self.queue_names = self.prefix + "qn"
        """Set of pilots that have (had) their own queue."""
        self.claimed_prefix = self.prefix + "c:"
        self.heartbeat_prefix = self.prefix + "hb:"
        self.live = self.prefix + "live"
        """Set of pilots that heartbeat (the live set)."""
        self.events = self.prefix + "ev"
        """The event stream."""
        self.unbound_prefix = self.prefix + "ub:"
        """Prefix of binders' unbound sets (``+ <binder>``); scripts build the keys from it."""
        self.binders = self.prefix + "ubn"
        """Set of binders that have an unbound set."""
        self.lease_prefix = self.prefix + "bl:"
        """Prefix of binders' lease keys (``+ <binder>``)."""

    def entity_prefix(self, kind: str) -> str:
        """Prefix of every entity hash of ``kind`` (``+ <id>``); scripts build entity keys from it."""
        return f"{self.prefix}e:{kind}:"

    def entity(self, kind: str, entity_id: str) -> str:
        """The hash of one entity."""
        return f"{self.prefix}e:{kind}:{entity_id}"

    def index(self, kind: str) -> str:
        """The set of all ids of ``kind``."""
        return f"{self.prefix}ids:{kind}"

    def queue(self, pilot: str | None) -> str:
        """A pilot's own queue, or the shared queue for ``None`` / ``""``."""
        return self.queue_prefix + pilot if pilot else self.shared_queue

    def claimed(self, pilot: str) -> str:
        """A pilot's in-progress list (claimed CU ids, claim order)."""
        return self.claimed_prefix + pilot

    def unbound(self, binder: str) -> str:
        """A binder's unbound CUs (sorted set, creation order)."""
        return self.unbound_prefix + binder

    def lease(self, binder: str) -> str:
        """A binder's lease key (expires after the lease ttl)."""
        return self.lease_prefix + binder

    def heartbeat(self, pilot: str) -> str:
        """A pilot's heartbeat key (expires after the heartbeat ttl)."""
        return self.heartbeat_prefix + pilot
