"""BigJob's ``file_transfer``: fetch single files from URLs into a local directory.

Each :class:`~pilotdata.descriptions.FileTransfer` names a source and the file name it gets in the
directory (a CU sandbox, or a pilot's directory of pilot-wide files). The source is read on this host:

* an absolute path, ``file:///path`` or ``ssh:///path`` (BigJob's spelling of "this host") is a local file;
* any other URL is opened as a store of its scheme (``ssh://user@host:port/path``, ``sftp://``,
  ``s3://bucket/key``, ``irods://``), with this process's own credentials: ``~/.ssh`` and
  ``~/.ssh/known_hosts`` (host keys are verified), ``PDATA_SSH_PASSWORD`` / ``PDATA_SSH_PASSPHRASE``,
  the AWS variables and profiles. No credential travels with the description.

The copy goes through the transfer engine (streamed, retried, checked, published atomically): a file
either arrives whole under its name or not at all. Every failure is a :class:`StagingError` naming the
transfer; nothing is swallowed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec

from pilotdata.descriptions import FileTransfer
from pilotdata.errors import PilotDataError, StagingError
from pilotdata.stores import open_store


def _source(url: str) -> tuple[Any, str, str]:
    """(fsspec filesystem, parent directory, file name) of a transfer's source."""
    local = url[len("file://"):] if url.startswith("file://") else url[len("ssh://"):] if url.startswith(
        "ssh:///") else url if url.startswith("/") else None
    if local is not None:
        path = Path(local)
        return fsspec.filesystem("file"), str(path.parent), path.name
    parent, _, name = url.rstrip("/").rpartition("/")
    store = open_store(parent)
    return store.fs, store.root, name


def fetch(transfers: Sequence[FileTransfer], directory: Path) -> list[Path]:
    """Copy each transfer's source into ``directory`` under its target name; return the paths written.

    An existing file of that name is replaced. Raises :class:`StagingError` naming the first transfer
    that failed (the ones before it stay).
    """
    import transfer

    written: list[Path] = []
    for item in transfers:
        what = f"file_transfer {item.to_json()!r}"
        final = directory / item.target
        scratch = directory / f".pdata-fetch-{uuid.uuid4().hex[:8]}"
        try:
            fs, root, name = _source(item.source)
            scratch.mkdir(parents=True)
            transfer.copy_files(fs, root, fsspec.filesystem("file"), str(scratch), [name], link=False)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / name, final)  # same directory tree: atomic
        except (PilotDataError, OSError, transfer.TransferError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, FileNotFoundError) or "not found" in reason.lower():
                reason = f"{item.source} does not exist ({reason})"
            raise StagingError(f"{what}: {reason}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        written.append(final)
    return written
