"""Child process for the transfer tests: ``python -m tests.transfer._child '<json>'``.

``{"op": "copy", "src": site, "dst": site, "entries": [...], "chunk_size": n}`` runs one
:func:`transfer.copy_files`; ``{"op": "ensure", "cache": dir, "key": k, "src": site, "entries": [...],
"marker": path}`` runs :meth:`transfer.PilotCache.ensure` with a source filesystem that appends a
line to ``marker`` for every file it opens. A site is ``{"kind": "file"|"sftp"|"s3", "root": ...}``
plus ``"ssh"`` (host, port, user, key_file, known_hosts) or ``"s3"`` (storage options).
Prints ``started`` before the work and ``done <json>`` after it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from transfer import FileEntry, PilotCache, copy_files


class CountingLocalFS(LocalFileSystem):  # type: ignore[misc]
    """A local filesystem that records every file it opens (one line per open in ``marker``)."""

    cachable = False

    def __init__(self, marker: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker = marker

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        with open(self.marker, "a") as m:
            m.write(f"{os.getpid()} {path}\n")
        if mode == "rb":  # a plain file object: the tests read FIFOs, which fsspec's opener would seek
            return open(self._strip_protocol(path), "rb")  # the caller closes it
        return super()._open(path, mode, **kwargs)


def make_fs(site: dict[str, Any]) -> Any:
    """The filesystem a site description names."""
    if site["kind"] == "file":
        return LocalFileSystem()
    if site["kind"] == "counting":
        return CountingLocalFS(site["marker"])
    if site["kind"] == "sftp":
        from tests.transfer.conftest import KnownHostsSFTP

        ssh = site["ssh"]
        return KnownHostsSFTP(ssh["host"], known_hosts=ssh["known_hosts"], port=ssh["port"], username=ssh["user"],
                              key_filename=ssh["key_file"], look_for_keys=False, allow_agent=False)
    if site["kind"] == "s3":
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **site["s3"])
    raise ValueError(site["kind"])


def main(spec: dict[str, Any]) -> None:
    """Run the operation ``spec`` describes."""
    entries = [FileEntry.from_dict(e) for e in spec["entries"]]
    print("started", flush=True)
    if spec["op"] == "copy":
        report = copy_files(make_fs(spec["src"]), spec["src"]["root"], make_fs(spec["dst"]), spec["dst"]["root"],
                            entries, chunk_size=spec.get("chunk_size", 8 * 2**20), link=False)
        print("done", json.dumps({"files": report.files, "bytes": report.bytes}), flush=True)
    elif spec["op"] == "ensure":
        path = PilotCache(spec["cache"]).ensure(spec["key"], make_fs(spec["src"]), spec["src"]["root"], entries)
        print("done", json.dumps({"path": str(path)}), flush=True)
    else:
        raise ValueError(spec["op"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
