"""Where a DataUnit's files come from: local files and directories, or files in any store.

:func:`resolve_sources` groups a description's ``file_urls`` into (filesystem, root, names) sources
and checks they exist before anything is recorded; the upload reads them from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from pilotdata.errors import DescriptionError, StoreError
from pilotdata.stores import open_store


@dataclass
class Source:
    """Files ``names`` (relative to ``root``) on the fsspec filesystem ``fs``."""

    fs: Any
    root: str
    names: list[str]

    def size(self) -> int:
        """Total bytes of the files."""
        return sum(int(self.fs.size(f"{self.root.rstrip('/')}/{n}")) for n in self.names)


def resolve_sources(file_urls: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[Source]:
    """Group ``file_urls`` (local files/directories or store URLs) into (fs, root, names) sources.

    A file keeps its base name; a directory keeps its own name as a prefix of its files' paths.
    Missing local paths raise :class:`DescriptionError` naming them; nothing is read yet.
    """
    sources: list[Source] = []
    seen: dict[str, str] = {}
    for url in file_urls:
        if "://" in url and not url.startswith("file://"):
            parent, _, leaf = url.rstrip("/").rpartition("/")
            store = open_store(parent, storage_options=storage_options)
            fs, root = store.fs, store.root
            if not leaf:
                raise DescriptionError(f"file_urls: {url!r} names no file", field="file_urls", value=url)
            full = f"{root.rstrip('/')}/{leaf}"
            try:
                is_dir = fs.isdir(full)
                names = (sorted(store.files(leaf)) if is_dir
                         else [leaf] if fs.exists(full) else [])
            except Exception as exc:
                raise StoreError(f"file_urls: cannot read {store.url}/{leaf}: {exc}") from exc
            if not names:
                raise DescriptionError(f"file_urls: {store.url}/{leaf} does not exist", field="file_urls", value=url)
        else:
            path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser().absolute()
            if not path.exists():
                raise DescriptionError(f"file_urls: {str(path)!r} does not exist", field="file_urls", value=url)
            fs, root, leaf = fsspec.filesystem("file"), str(path.parent), path.name
            if path.is_dir():
                names = sorted(str(p.relative_to(path.parent)) for p in path.rglob("*") if p.is_file())
            else:
                names = [leaf]
        for name in names:
            if name in seen:
                raise DescriptionError(f"file_urls: {name!r} comes from both {seen[name]!r} and {url!r}",
                                       field="file_urls", value=url)
            seen[name] = url
        sources.append(Source(fs, root, names))
    return sources
