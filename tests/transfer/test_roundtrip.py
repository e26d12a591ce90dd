"""Every pair of real filesystems (local file, SFTP on sshd, S3 on moto): copies arrive whole."""

from __future__ import annotations

import hashlib

import pytest

from tests.transfer.conftest import KINDS, SiteFactory, dataset, manifest, populate
from transfer import copy_files, verify_files


@pytest.mark.parametrize("dst_kind", KINDS)
@pytest.mark.parametrize("src_kind", KINDS)
def test_round_trip_between_every_pair(src_kind: str, dst_kind: str, site_factory: SiteFactory) -> None:
    src, dst = site_factory(src_kind, "src"), site_factory(dst_kind, "dst")
    files = dataset(seed=len(src_kind) * 7 + len(dst_kind), count=40, big=11 * 2**20)
    populate(src, files)
    entries = manifest(files)
    deltas: list[int] = []

    report = copy_files(src.fs, src.root, dst.fs, dst.root, entries, workers=6, chunk_size=2**20,
                        progress=lambda b, n: deltas.append(b))

    assert report.files == len(files)
    assert report.bytes == sum(len(d) for d in files.values()) == sum(deltas)
    assert [e.path for e in report.entries] == [e.path for e in entries]
    assert {e.path: e.sha256 for e in report.entries} == {e.path: e.sha256 for e in entries}
    assert dst.listing() == sorted(files)  # no part files left behind
    for name in ("big/blob.bin", *sorted(files)[:5]):
        assert hashlib.sha256(dst.read(name)).digest() == hashlib.sha256(files[name]).digest()
    assert verify_files(dst.fs, dst.root, entries) == []
    # and back: the copy of the copy is still the same data
    back = site_factory("file", "back")
    copy_files(dst.fs, dst.root, back.fs, back.root, entries, workers=4)
    assert verify_files(back.fs, back.root, entries) == []
