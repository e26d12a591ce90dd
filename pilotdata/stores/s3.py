"""``s3://bucket/prefix`` stores over s3fs (any S3 API: AWS, MinIO, Ceph, moto).

Storage options are s3fs arguments (``key``, ``secret``, ``token``, ``endpoint_url``, ``profile``,
``client_kwargs``, ``config_kwargs``, ``anon`` ...). Credentials not given are found by botocore
as usual: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` and ``~/.aws``. The endpoint is part of a store's identity, so one taken from
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` is written into the options (and so into the
public record); keys and secrets never are.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import SplitResult

import botocore.exceptions
import s3fs

from pilotdata.errors import StoreAuthError, StoreError, StoreUnreachableError, UnsafePathError
from pilotdata.stores.base import InvalidStoreURLError, Store

__all__ = ["S3Store"]

#: S3 error codes that mean "these credentials are not accepted" (HEAD requests only carry "403").
_AUTH_CODES = frozenset({
    "403", "AccessDenied", "AccountProblem", "AllAccessDisabled", "ExpiredToken", "InvalidAccessKeyId",
    "InvalidClientTokenId", "InvalidSecurity", "InvalidToken", "NotSignedUp", "RequestTimeTooSkewed",
    "SignatureDoesNotMatch",
})
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
)


_NO_CREDENTIALS = (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)


class S3Store(Store):
    """A prefix in an S3 bucket."""

    schemes = ("s3",)

    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        if parts.username or parts.password:
            raise InvalidStoreURLError(
                f"PilotData URL s3://{parts.hostname or ''}{parts.path} carries credentials before '@'; "
                "pass key/secret as storage options or through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
                "AWS_PROFILE"
            )
        self._plain_url(url, parts)
        if not parts.netloc:
            raise InvalidStoreURLError(f"PilotData URL {url!r} names no bucket (s3://bucket/prefix)")
        self.bucket: str = parts.netloc
        prefix = posixpath.normpath("/" + parts.path.lstrip("/")).lstrip("/")
        root = f"{self.bucket}/{prefix}" if prefix else self.bucket
        if self._endpoint() is None:
            from_env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if from_env:
                self._options["endpoint_url"] = from_env
        return root, f"s3://{root}"

    def _endpoint(self) -> str | None:
        client_kwargs = self._options.get("client_kwargs") or {}
        endpoint = self._options.get("endpoint_url") or client_kwargs.get("endpoint_url")
        return str(endpoint).rstrip("/") if endpoint else None

    def _identity(self) -> str | None:
        """Who signs the requests (access key id or profile), compared in memory only, never shown."""
        client_kwargs = self._options.get("client_kwargs") or {}
        for value in (
            self._options.get("key"),
            client_kwargs.get("aws_access_key_id"),
            self._options.get("profile"),
            os.environ.get("AWS_ACCESS_KEY_ID"),
            os.environ.get("AWS_PROFILE"),
        ):
            if value:
                return str(value)
        return None

    def path(self, rel: str) -> str:
        """As :meth:`Store.path`; also refuses ``?versionId=``, which s3fs would read as a version."""
        if isinstance(rel, str) and "?versionId=" in rel:
            raise UnsafePathError(f"unsafe file name {rel!r}: '?versionId=' is not allowed in S3 names")
        return super().path(rel)

    def _make_fs(self) -> Any:
        return s3fs.S3FileSystem(**self._options)

    def _probe(self) -> None:
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except FileNotFoundError as exc:
            raise StoreError(
                f"bucket {self.bucket!r} of {self.url} does not exist at {self._endpoint() or 'AWS'}"
            ) from exc

    def _walk_files(self, top: str) -> Iterator[tuple[str, int]]:
        """One paginated listing (s3fs ``find``) instead of one request per 'directory'."""
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return
        for name, info in found.items():
            if info.get("type") != "directory":
                yield str(name), int(info.get("size") or 0)

    def _classify(self, exc: BaseException) -> tuple[type[StoreError], str] | None:
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _AUTH_CODES or status == 403:
                return StoreAuthError, f"S3 rejected the credentials ({code or status})"
            return None
        if isinstance(exc, _NO_CREDENTIALS):
            return StoreAuthError, (
                "no S3 credentials found: pass key/secret, or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            return StoreAuthError, f"AWS profile {exc.kwargs.get('profile')!r} not found"
        if isinstance(exc, _UNREACHABLE):
            return StoreUnreachableError, f"cannot connect to the S3 endpoint {self._endpoint() or 'AWS'}"
        return super()._classify(exc)

    def same_s3_endpoint(self, other: Store) -> bool:
        """True when ``other`` is S3 at the same endpoint, signed by the same identity."""
        return (
            isinstance(other, S3Store)
            and self._endpoint() == other._endpoint()
            and self._identity() == other._identity()
        )
