"""The transfer engine's errors and the classification of library errors as transient or not.

``transfer`` imports nothing from ``pilotdata``; the services convert these errors into
:mod:`pilotdata.errors` at their boundary. The tree::

    TransferError                       a copy failed (after its retries); names the file and URL
    ├── ChecksumMismatchError           size or checksum differs from the manifest; nothing was published
    ├── UnsafePathError (also ValueError)  ``..``, absolute, empty, NUL, duplicate, escaping the root
    ├── TransientError                  raise it (or a subclass) to mark a failure as worth a retry
    └── CacheError                      the per-pilot cache cannot do what was asked
        └── CacheMissError (also KeyError)  unknown cache key, or a file the cached DU lacks

:func:`is_transient` decides what the engine retries: connection drops, timeouts, socket errors,
paramiko ``SSHException`` (but not authentication or host-key errors), botocore connection and
throttling errors (by class name or S3 error code, so botocore need not be importable). It never
retries ``FileNotFoundError``, ``PermissionError``, authentication errors or checksum mismatches.
"""

from __future__ import annotations

import errno
import socket

__all__ = [
    "CacheError",
    "CacheMissError",
    "ChecksumMismatchError",
    "TransferError",
    "TransientError",
    "UnsafePathError",
    "is_transient",
]


class TransferError(Exception):
    """A transfer failed; ``path`` is the relative file name and ``url`` where it failed (no secrets)."""

    def __init__(self, message: str, *, path: str | None = None, url: str | None = None,
                 attempts: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.url = url
        self.attempts = attempts
        self.errors: list[BaseException] = [self]
        """Every file that failed in the same copy (this one first)."""


class ChecksumMismatchError(TransferError):
    """The bytes copied differ from the manifest (size or checksum); the file was not published."""

    def __init__(self, message: str, *, path: str | None = None, url: str | None = None,
                 expected: str | int | None = None, actual: str | int | None = None) -> None:
        super().__init__(message, path=path, url=url)
        self.expected = expected
        self.actual = actual


class UnsafePathError(TransferError, ValueError):
    """A relative file name that is empty, absolute, has ``..``/NUL, or would escape its root."""


class TransientError(TransferError):
    """A failure that is worth retrying (raised by wrappers that know better than the classifier)."""


class CacheError(TransferError):
    """The per-pilot cache cannot do what was asked."""


class CacheMissError(CacheError, KeyError):
    """An unknown cache key, or a file name the cached DataUnit does not have."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


# Never retried, whatever their base classes say (FileNotFoundError is an OSError, like ConnectionError).
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
    ChecksumMismatchError, UnsafePathError, CacheError,
)
# paramiko: SSHException is transient except these (and their subclasses), matched by class name.
_PARAMIKO_PERMANENT = frozenset({
    "AuthenticationException", "BadAuthenticationType", "PasswordRequiredException", "PartialAuthentication",
    "UnableToAuthenticate", "BadHostKeyException", "IncompatiblePeer", "ConfigParseError",
    "CouldNotCanonicalize", "UnknownHostKeyError",
})
_PARAMIKO_TRANSIENT = frozenset({"SSHException", "ChannelException", "NoValidConnectionsError", "ProxyCommandFailure"})
# botocore / aiobotocore / urllib3 / aiohttp connection-level errors.
_HTTP_TRANSIENT = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ProxyConnectionError", "IncompleteReadError", "ResponseStreamingError", "HTTPClientError",
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
    "ServerTimeoutError", "ProtocolError", "IncompleteRead", "FSTimeoutError",
})
_HTTP_PERMANENT = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError"})
# S3 error codes (botocore ClientError.response["Error"]["Code"]) worth a retry: throttling, 5xx.
_S3_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "SlowDown",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "500", "502",
    "503", "504",
})
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "ETIMEDOUT", "EPIPE", "ENETUNREACH", "ENETDOWN",
        "ENETRESET", "EHOSTUNREACH", "EHOSTDOWN", "EAGAIN", "EBUSY", "EREMOTEIO",
    ) if hasattr(errno, name)
)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _verdict(exc: BaseException) -> bool | None:
    """True/False when ``exc`` alone decides it, None when its cause should be consulted."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, _PERMANENT_TYPES):
        return False
    names = _class_names(exc)
    if names & _PARAMIKO_PERMANENT or names & _HTTP_PERMANENT:
        return False
    if "ClientError" in names:  # botocore: decide by the S3 error code
        response = getattr(exc, "response", None) or {}
        code = str((response.get("Error") or {}).get("Code", ""))
        return code in _S3_TRANSIENT_CODES
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror, socket.herror, EOFError)):
        return True
    if names & _PARAMIKO_TRANSIENT or names & _HTTP_TRANSIENT:
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed file copy that raised ``exc`` is worth retrying.

    The exception itself decides first; an undecided one (a plain ``OSError`` from s3fs, say) is
    judged by its ``__cause__`` / ``__context__`` chain. Anything unrecognised is not retried.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdict = _verdict(current)
        if verdict is not None:
            return verdict
        current = current.__cause__ or current.__context__
    return False
