"""``file://`` stores and bare local paths, over fsspec's ``LocalFileSystem``.

Accepted: ``file:///abs/path``, ``file://localhost/abs/path``, ``file:rel/path``, ``/abs/path`` and
``rel/path`` (made absolute against the current directory, ``~`` expanded, symlinks resolved).
The public URL is always ``file:///abs/path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

from fsspec.implementations.local import LocalFileSystem

from pilotdata.redaction import redact_url
from pilotdata.stores.base import InvalidStoreURLError, Store

__all__ = ["FileStore"]


class FileStore(Store):
    """A directory on a filesystem this process can see."""

    schemes = ("file",)

    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        if "://" in url:
            self._plain_url(url, parts)
            if parts.netloc not in ("", "localhost"):
                raise InvalidStoreURLError(
                    f"file URL {redact_url(url)!r} names host {parts.netloc!r}; use file:///absolute/path "
                    "(or ssh://host/path for another machine)"
                )
            raw = parts.path
        elif url[:5].lower() == "file:":
            raw = url[5:]
        else:
            raw = url
        if not raw or "\x00" in raw:
            raise InvalidStoreURLError(f"file URL {redact_url(url)!r} has no usable path")
        root = Path(raw).expanduser().resolve(strict=False).as_posix()
        return root, f"file://{root}"

    def _make_fs(self) -> Any:
        return LocalFileSystem(**self._options)

    def _invalidate(self, full: str) -> None:
        """The local filesystem keeps no listing cache."""

    def _device(self) -> int:
        """``st_dev`` of the root, or of its nearest existing ancestor if it does not exist yet."""
        path = Path(self.root)
        while True:
            try:
                return os.stat(path).st_dev
            except FileNotFoundError:
                if path.parent == path:
                    raise
                path = path.parent

    def same_local_fs(self, other: Store) -> bool:
        """True when ``other`` is also local and on the same device (so hard links between them work)."""
        return isinstance(other, FileStore) and self._device() == other._device()
