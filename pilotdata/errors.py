"""The project's error tree.

Every error pilot-data raises on purpose derives from :class:`PilotDataError`. Errors from libraries
(redis-py, sqlite3, SQLAlchemy, fsspec, paramiko, botocore) are converted at the boundary with
``raise ... from exc`` so callers catch one tree and the original stays in ``__cause__``::

    PilotDataError
    ├── DescriptionError (also ValueError)   bad description field / value; names the field
    ├── StateError
    │   └── IllegalTransitionError            transition not in the entity's table
    ├── NotFoundError (also KeyError)         unknown pilot, CU, DU or PD id
    ├── AlreadyExistsError                    an entity id is taken
    ├── CoordinationError                     the coordination backend failed or is unreachable
    │   └── CoordinationUnavailableError      unreachable (connection refused / lost, busy, loading)
    ├── HistoryError                          the SQL history store failed
    ├── StoreError                            a PilotData store operation failed
    │   ├── UnknownSchemeError (also ValueError)
    │   ├── MissingDependencyError (also ImportError)  with an install hint
    │   ├── UnsafePathError (also ValueError)  ``..``, absolute, or escaping the root
    │   ├── InvalidStoreURLError (also ValueError)   malformed store URL (pilotdata.stores.base)
    │   ├── QuotaExceededError
    │   ├── StoreAuthError                    wrong credentials / rejected key
    │   │   └── UnknownHostKeyError           SSH host key not in known_hosts (pilotdata.stores.sftp)
    │   └── StoreUnreachableError             host or endpoint unreachable
    ├── TransferError                         a copy failed after its retries
    │   └── ChecksumMismatchError
    ├── LaunchError                           a pilot could not be started / queried / cancelled
    ├── StagingError                          input/output staging of a CU failed
    └── TimeoutExpired (also TimeoutError)    a wait ran out of time

Messages name the field, file, URL or id at fault. No message ever contains a secret.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PilotDataError(Exception):
    """Base class of every error raised by pilot-data."""


class DescriptionError(PilotDataError, ValueError):
    """A description (dict or object) has an unknown key or a bad value.

    ``field`` is the offending key (dotted for nested values), ``value`` the rejected value.
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class StateError(PilotDataError):
    """A state-related failure."""


class IllegalTransitionError(StateError):
    """A transition that the entity's transition table does not allow."""

    def __init__(self, kind: str, entity_id: str, current: str, target: str) -> None:
        super().__init__(f"illegal {kind} transition for {entity_id!r}: {current} -> {target}")
        self.kind = kind
        self.entity_id = entity_id
        self.current = current
        self.target = target


class NotFoundError(PilotDataError, KeyError):
    """An entity id that does not exist (in this namespace)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(PilotDataError):
    """An entity id that is already taken."""


class CoordinationError(PilotDataError):
    """The coordination backend failed or could not be reached."""


class CoordinationUnavailableError(CoordinationError):
    """The coordination backend could not be reached (refused, lost, timed out, busy, still loading).

    Transient by nature: :class:`pilotdata.coordination.reconnect.Reconnecting` retries these (and only
    these) until its patience runs out; an error of the backend itself (a rejected password, a bad
    reply) is a plain :class:`CoordinationError` and is never retried.
    """


class HistoryError(PilotDataError):
    """The SQL history store failed."""


class StoreError(PilotDataError):
    """A PilotData store operation failed."""


class UnknownSchemeError(StoreError, ValueError):
    """A URL scheme no registered store or launcher handles."""


class MissingDependencyError(StoreError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class UnsafePathError(StoreError, ValueError):
    """A file name that is absolute, contains ``..`` or would escape the store root."""


class QuotaExceededError(StoreError):
    """Writing would exceed a PilotData's ``size`` quota."""


class StoreAuthError(StoreError):
    """The store rejected the credentials."""


class StoreUnreachableError(StoreError):
    """The store's host or endpoint could not be reached."""


class TransferError(PilotDataError):
    """A transfer failed after its retries."""


class ChecksumMismatchError(TransferError):
    """A copy's checksum or size differs from the manifest."""


class LaunchError(PilotDataError):
    """A pilot could not be submitted, queried or cancelled."""


class StagingError(PilotDataError):
    """Input or output staging of a ComputeUnit failed."""


class TimeoutExpired(PilotDataError, TimeoutError):
    """A wait ran out of time before the condition held."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is near."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
