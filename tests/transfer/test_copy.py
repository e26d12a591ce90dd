"""copy_files behaviour: safety checks, checksum verification, retries, progress, fast paths."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import boto3
import paramiko
import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.transfer.conftest import KINDS, KnownHostsSFTP, SiteFactory, dataset, manifest, populate, s3_fs, sftp_fs
from transfer import (
    ChecksumMismatchError,
    FileEntry,
    TransferError,
    UnsafePathError,
    copy_files,
    verify_files,
)
from transfer.objectstore import part_checksum


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FlakyFS(LocalFileSystem):  # type: ignore[misc]
    """A real local filesystem whose first ``failures`` opens of each file raise ``error``."""

    cachable = False

    def __init__(self, failures: int, error: type[Exception] = ConnectionError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.error = error
        self.opens: dict[str, int] = {}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "r" in mode:
            n = self.opens[path] = self.opens.get(path, 0) + 1
            if n <= self.failures:
                raise self.error(f"simulated failure {n} opening {path}")
        return super()._open(path, mode, **kwargs)


# ------------------------------------------------------------------ unsafe names
@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", "", "a/../../b", "a\x00b", "dir/..", "a\\b"])
@pytest.mark.parametrize("dst_kind", KINDS)
def test_unsafe_names_are_rejected_before_anything_is_written(
    dst_kind: str, bad: str, site_factory: SiteFactory
) -> None:
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    populate(src, {"good.txt": b"fine"})
    with pytest.raises(UnsafePathError) as info:
        copy_files(src.fs, src.root, dst.fs, dst.root, ["good.txt", bad])
    assert repr(bad)[1:-1] in str(info.value) or bad == ""
    assert dst.listing() == []


def test_duplicate_and_file_directory_clashes_are_rejected(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"a": b"1", "b/c": b"2"})
    with pytest.raises(UnsafePathError, match="twice"):
        copy_files(src.fs, src.root, dst.fs, dst.root, ["a", "./a"])
    with pytest.raises(UnsafePathError, match="file and as a directory"):
        copy_files(src.fs, src.root, dst.fs, dst.root, ["b", "b/c"])
    assert dst.listing() == []


def test_a_symlink_in_the_destination_cannot_lead_writes_outside(site_factory: SiteFactory,
                                                                 tmp_path: Path) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"sub/x.txt": b"data"})
    outside = tmp_path / "outside"
    outside.mkdir()
    assert dst.local_dir is not None
    (dst.local_dir / "sub").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        copy_files(src.fs, src.root, dst.fs, dst.root, ["sub/x.txt"], link=False)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ checksums
@pytest.mark.parametrize("dst_kind", KINDS)
def test_corrupted_source_raises_checksum_mismatch_and_publishes_nothing(
    dst_kind: str, site_factory: SiteFactory, moto_server: Any
) -> None:
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    good = {"small.bin": os.urandom(1000), "large.bin": os.urandom(9 * 2**20)}
    entries = manifest(good)
    flipped = bytes([good["large.bin"][0] ^ 0xFF]) + good["large.bin"][1:]  # always differs (b"X" + ... did not
    populate(src, {"small.bin": good["small.bin"], "large.bin": flipped})  # when the random byte was already X)
    with pytest.raises(ChecksumMismatchError) as info:
        copy_files(src.fs, src.root, dst.fs, dst.root, entries, chunk_size=2**20, link=False)
    err = info.value
    assert err.path == "large.bin" and "large.bin" in str(err) and err.expected == entries[1].sha256
    assert not dst.exists("large.bin")
    assert all(".part-" not in n for n in dst.listing())
    if dst_kind == "s3":  # the multipart upload was aborted, not left behind
        client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        assert client.list_multipart_uploads(Bucket=dst.root.split("/")[0]).get("Uploads", []) == []


def test_small_local_files_are_checked_before_their_names_appear(site_factory: SiteFactory,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of one read between two local paths take the engine's shortest path; every check still holds."""
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    good = {f"d{i % 3}/f{i}.bin": os.urandom(100 + i) for i in range(30)}
    entries = manifest(good)
    populate(src, good)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, entries, link=False, stat_cache=None)
    assert report.entries == entries and report.methods == {"stream": 30}
    assert all(dst.read(n) == data for n, data in good.items())

    corrupted = dict(good, **{"d1/f7.bin": bytes([good["d1/f7.bin"][0] ^ 0xFF]) + good["d1/f7.bin"][1:]})
    populate(src, corrupted)
    target = site_factory("file", "corrupted")
    with pytest.raises(ChecksumMismatchError) as info:
        copy_files(src.fs, src.root, target.fs, target.root, entries, link=False, workers=1)
    assert info.value.path == "d1/f7.bin" and not target.exists("d1/f7.bin")
    # without verification the copy goes through, and the report names what was copied, not the manifest
    unchecked = site_factory("file", "unchecked")
    report = copy_files(src.fs, src.root, unchecked.fs, unchecked.root, entries, link=False, verify=False)
    got = {e.path: e.digest for e in report.entries}
    listed = {e.path: e.digest for e in entries}
    assert got["d1/f7.bin"] == _sha(corrupted["d1/f7.bin"]) != listed["d1/f7.bin"]
    assert all(got[n] == listed[n] for n in good if n != "d1/f7.bin")
    assert unchecked.read("d1/f7.bin") == corrupted["d1/f7.bin"]

    from transfer.endpoints import LocalWriter

    real_write = LocalWriter.write

    def short(self: LocalWriter, data: Any) -> None:  # a file system that keeps one byte less than it was given
        real_write(self, bytes(data)[:-1])

    monkeypatch.setattr(LocalWriter, "write", short)
    populate(src, good)
    lossy = site_factory("file", "lossy")
    with pytest.raises(ChecksumMismatchError, match="stored size") as info:
        copy_files(src.fs, src.root, lossy.fs, lossy.root, entries, link=False, workers=1)
    assert lossy.listing() == []


@pytest.mark.parametrize("dst_kind", KINDS)
def test_a_source_longer_than_its_manifest_is_not_truncated_to_fit(
    dst_kind: str, site_factory: SiteFactory
) -> None:
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    data = os.urandom(5000)
    populate(src, {"f.bin": data + b"extra"})
    with pytest.raises(ChecksumMismatchError, match="size"):
        copy_files(src.fs, src.root, dst.fs, dst.root, [FileEntry("f.bin", len(data), _sha(data))], link=False)
    assert not dst.exists("f.bin")


@pytest.mark.parametrize("kind", KINDS)
def test_full_verification_reads_every_copy_back(kind: str, site_factory: SiteFactory) -> None:
    src, dst = site_factory(kind, "src"), site_factory(kind, "dst")
    files = dataset(3, 8, big=3 * 2**20)
    populate(src, files)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, manifest(files), verify="full", chunk_size=2**20)
    assert report.files == len(files)
    assert verify_files(dst.fs, dst.root, manifest(files)) == []


def test_verify_files_reports_missing_resized_and_corrupted_files(site_factory: SiteFactory) -> None:
    site = site_factory("file")
    files = {"ok": b"fine", "gone": b"x", "short": b"abcdef", "flipped": b"abcdef"}
    entries = manifest(files)
    populate(site, {"ok": b"fine", "short": b"abc", "flipped": b"abcdeF"})
    problems = {m.path: m for m in verify_files(site.fs, site.root, entries)}
    assert sorted(problems) == ["flipped", "gone", "short"]
    assert problems["gone"].problem == "missing" and str(problems["gone"]) == "gone: missing"
    assert problems["short"].problem == "size" and (problems["short"].expected, problems["short"].actual) == (6, 3)
    assert problems["flipped"].problem == "sha256" and problems["flipped"].actual == _sha(b"abcdeF")


@pytest.mark.parametrize("verify", [True, "full"])
def test_other_fsspec_filesystems_get_part_files_and_a_rename(
    verify: Any, site_factory: SiteFactory, tmp_path: Path
) -> None:
    """A filesystem the engine has no special case for (here: a wrapped local one) goes through fs.open/fs.mv."""
    src = site_factory("file", "src")
    files = dataset(12, 10, big=3 * 2**20)
    populate(src, files)
    wrapped = FlakyFS(failures=0)
    report = copy_files(src.fs, src.root, wrapped, str(tmp_path / "out"), manifest(files), verify=verify,
                        chunk_size=2**20)
    assert report.files == len(files)
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        sorted(files)
    assert verify_files(LocalFileSystem(), str(tmp_path / "out"), manifest(files)) == []


# ------------------------------------------------------------------ retries and errors
def test_transient_errors_are_retried_until_the_copy_succeeds(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    files = dataset(11, 12)
    populate(src, files)
    flaky = FlakyFS(failures=2)
    deltas: list[int] = []
    report = copy_files(flaky, src.root, dst.fs, dst.root, manifest(files), backoff=0.001, workers=4,
                        progress=lambda b, n: deltas.append(b))
    assert report.files == len(files) and report.retries == 2 * len(files)
    assert all(n == 3 for n in flaky.opens.values()) and len(flaky.opens) == len(files)
    assert sum(deltas) == report.bytes == sum(len(d) for d in files.values())
    assert verify_files(dst.fs, dst.root, manifest(files)) == []


def test_retries_run_out_with_an_error_naming_the_file_and_url(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"a/f.txt": b"hello"})
    flaky = FlakyFS(failures=100)
    with pytest.raises(TransferError) as info:
        copy_files(flaky, src.root, dst.fs, dst.root, ["a/f.txt"], retries=2, backoff=0.001)
    err = info.value
    assert err.path == "a/f.txt" and err.attempts == 3
    assert "'a/f.txt'" in str(err) and f"{src.root}/a/f.txt" in str(err) and "after 3 attempts" in str(err)
    assert isinstance(err.__cause__, ConnectionError)
    assert dst.listing() == []


@pytest.mark.parametrize("error", [FileNotFoundError, PermissionError])
def test_permanent_errors_are_not_retried(error: type[Exception], site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"f.txt": b"hello"})
    flaky = FlakyFS(failures=100, error=error)
    with pytest.raises(TransferError) as info:
        copy_files(flaky, src.root, dst.fs, dst.root, ["f.txt"], retries=4, backoff=0.001)
    assert info.value.attempts == 1 and flaky.opens[f"{src.root}/f.txt"] == 1
    assert isinstance(info.value.__cause__, error)


@pytest.mark.parametrize("src_kind", KINDS)
def test_a_missing_source_file_fails_with_its_url(src_kind: str, site_factory: SiteFactory) -> None:
    src, dst = site_factory(src_kind, "src"), site_factory("file", "dst")
    populate(src, {"here.txt": b"x"})
    with pytest.raises(TransferError) as info:
        copy_files(src.fs, src.root, dst.fs, dst.root, ["here.txt", "not-there.txt"], link=False)
    assert info.value.path == "not-there.txt" and "not-there.txt" in str(info.value)
    assert src_kind in (info.value.url or "").split(":")[0] or src_kind == "file"
    assert "testing" not in str(info.value)  # no S3 secret in the message


# ------------------------------------------------------------------ progress
def test_progress_deltas_sum_to_the_bytes_and_count_every_file(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    files = dataset(4, 30, big=5 * 2**20 + 3)
    populate(src, files)
    calls: list[tuple[int, int]] = []
    report = copy_files(src.fs, src.root, dst.fs, dst.root, list(files), chunk_size=2**20, link=False,
                        progress=lambda b, n: calls.append((b, n)))
    assert sum(b for b, _ in calls) == report.bytes == sum(len(d) for d in files.values())
    assert calls[-1][1] == len(files) and [n for _, n in calls] == sorted(n for _, n in calls)
    assert max(b for b, _ in calls) <= 2**20  # big files report chunk by chunk
    assert report.fast_path is None and report.methods == {"stream": len(files)}
    assert {e.path: e.sha256 for e in report.entries} == {e.path: e.sha256 for e in manifest(files)}


# ------------------------------------------------------------------ fast paths
def test_local_copies_are_hard_links_to_the_same_inode_and_read_only(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    files = dataset(5, 6)
    populate(src, files)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, manifest(files), read_only=True)
    assert report.fast_path == "hardlink" and report.methods == {"hardlink": len(files)}
    assert src.local_dir is not None and dst.local_dir is not None
    for name in files:
        s, d = (src.local_dir / name).stat(), (dst.local_dir / name).stat()
        assert (s.st_ino, s.st_dev) == (d.st_ino, d.st_dev)
        assert stat.S_IMODE(d.st_mode) & 0o222 == 0
    assert report.bytes == sum(len(d) for d in files.values())


@pytest.mark.parametrize("link", [True, False])
def test_copying_a_directory_onto_itself_changes_nothing(link: bool, site_factory: SiteFactory) -> None:
    site = site_factory("file")
    files = dataset(9, 5)
    populate(site, files)
    report = copy_files(site.fs, site.root, site.fs, site.root, manifest(files), link=link)
    assert report.files == len(files) and site.listing() == sorted(files)
    assert verify_files(site.fs, site.root, manifest(files)) == []


def test_link_false_copies_bytes_into_a_new_inode(site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory("file", "dst")
    populate(src, {"f": b"bytes"})
    report = copy_files(src.fs, src.root, dst.fs, dst.root, ["f"], link=False)
    assert report.fast_path is None
    assert src.local_dir is not None and dst.local_dir is not None
    assert (src.local_dir / "f").stat().st_ino != (dst.local_dir / "f").stat().st_ino
    assert stat.S_IMODE((dst.local_dir / "f").stat().st_mode) & 0o200  # writable unless read_only


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a second local filesystem (/dev/shm)")
def test_across_filesystems_a_symlink_replaces_the_refused_hard_link(
    site_factory: SiteFactory, tmp_path: Path
) -> None:
    import tempfile

    src = site_factory("file", "src")
    populate(src, {"d/f.bin": b"payload"})
    assert src.local_dir is not None
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        if os.stat(other).st_dev == os.stat(src.local_dir).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        report = copy_files(src.fs, src.root, LocalFileSystem(), other, ["d/f.bin"])
        assert report.fast_path == "symlink"
        link = Path(other) / "d" / "f.bin"
        assert link.is_symlink() and os.readlink(link) == str((src.local_dir / "d/f.bin").resolve())
        # hard links only: the refused link becomes a real copy
        report = copy_files(src.fs, src.root, LocalFileSystem(), other, ["d/f.bin"], link="hard")
        assert report.fast_path is None and not link.is_symlink() and link.read_bytes() == b"payload"


def test_same_s3_endpoint_copies_server_side(site_factory: SiteFactory) -> None:
    src, dst = site_factory("s3", "src"), site_factory("s3", "dst")
    files = dataset(6, 5, big=6 * 2**20)
    populate(src, files)
    report = copy_files(src.fs, src.root, dst.fs, dst.root, manifest(files))
    assert report.fast_path == "server-copy" and report.files == len(files)
    assert verify_files(dst.fs, dst.root, manifest(files)) == []
    # the ETag is no sha256: without a manifest checksum the copy is read back and hashed
    report = copy_files(src.fs, src.root, dst.fs, f"{dst.root}-2", list(files))
    assert {e.path: e.sha256 for e in report.entries} == {e.path: e.sha256 for e in manifest(files)}


def test_server_side_copy_with_full_verification_catches_a_corrupted_source(
    site_factory: SiteFactory
) -> None:
    src, dst = site_factory("s3", "src"), site_factory("s3", "dst")
    populate(src, {"f.bin": b"corrupted"})
    entry = FileEntry("f.bin", 9, _sha(b"originals"))
    with pytest.raises(ChecksumMismatchError):
        copy_files(src.fs, src.root, dst.fs, dst.root, [entry], verify="full")
    assert not dst.exists("f.bin")


def test_sftp_to_sftp_on_one_connection_shares_its_channels(site_factory: SiteFactory,
                                                             tmp_path: Path) -> None:
    src = site_factory("sftp", "src")
    files = dataset(8, 30, big=2 * 2**20)
    populate(src, files)
    other = tmp_path / "other"
    other.mkdir()
    # one connection for both sides: 8 workers would need 16 channels, sshd allows 10 sessions
    report = copy_files(src.fs, src.root, src.fs, str(other), manifest(files), workers=8)
    assert report.files == len(files)
    assert verify_files(LocalFileSystem(), str(other), manifest(files)) == []


def _transport(fs: KnownHostsSFTP) -> paramiko.Transport:
    """The SSH transport of a connected SFTP filesystem."""
    transport = fs.client.get_transport()
    assert transport is not None, "the SFTP filesystem is not connected"
    return transport


def _server_cipher(transport: paramiko.Transport) -> str:
    """The cipher the server sends with: paramiko sets ``remote_cipher`` on every key exchange (types-paramiko
    declares only ``local_cipher``)."""
    cipher: str = vars(transport)["remote_cipher"]
    return cipher


def test_sftp_connections_are_rekeyed_onto_aes_gcm_only_when_allowed(
    site_factory: SiteFactory, sshd_server: Any, tmp_path: Path
) -> None:
    src = site_factory("file", "src")
    populate(src, {"f": b"data"})
    fs = sftp_fs(sshd_server)
    key = _transport(fs).get_remote_server_key()
    try:
        copy_files(src.fs, src.root, fs, str(tmp_path / "a"), ["f"])
        transport = _transport(fs)
        assert _server_cipher(transport).endswith("gcm@openssh.com") and transport.is_active()
        assert transport.get_remote_server_key() == key
    finally:
        fs.client.close()
    gcm = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
    fs = sftp_fs(sshd_server, disabled_algorithms={"ciphers": gcm})
    try:
        copy_files(src.fs, src.root, fs, str(tmp_path / "b"), ["f"])
        assert not _server_cipher(_transport(fs)).endswith("gcm@openssh.com")
    finally:
        fs.client.close()
    assert (tmp_path / "a" / "f").read_bytes() == (tmp_path / "b" / "f").read_bytes() == b"data"


# ------------------------------------------------------------------ large files
@pytest.mark.slow
def test_a_file_over_one_gigabyte_is_copied_whole(tmp_path: Path) -> None:
    size = 1_100 * 2**20 + 12_345
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:  # sparse, with data at both ends and past the 1 GiB mark
        f.write(b"head")
        f.seek(2**30 + 7)
        f.write(os.urandom(4096))
        f.truncate(size)
        f.seek(size - 4)
        f.write(b"tail")
    try:
        report = copy_files(LocalFileSystem(), str(src), LocalFileSystem(), str(tmp_path / "dst"), ["huge.bin"],
                            link=False)
        out = tmp_path / "dst" / "huge.bin"
        assert report.bytes == size == out.stat().st_size
        assert verify_files(LocalFileSystem(), str(tmp_path / "dst"), report.entries) == []
        with open(out, "rb") as f:
            f.seek(size - 4)
            assert f.read() == b"tail"
    finally:
        for p in (tmp_path / "dst" / "huge.bin", src / "huge.bin"):
            p.unlink(missing_ok=True)


@pytest.mark.parametrize("dst_kind", ["sftp", "s3"])
def test_a_large_file_reaches_a_remote_store_whole(dst_kind: str, site_factory: SiteFactory) -> None:
    src, dst = site_factory("file", "src"), site_factory(dst_kind, "dst")
    data = os.urandom(48 * 2**20 + 17)
    populate(src, {"large.bin": data})
    entry = FileEntry("large.bin", len(data), _sha(data))
    report = copy_files(src.fs, src.root, dst.fs, dst.root, [entry])
    assert report.bytes == len(data)
    dst.fs.invalidate_cache()
    assert dst.fs.info(f"{dst.root}/large.bin")["size"] == len(data)
    assert verify_files(dst.fs, dst.root, [entry]) == []


def test_a_multipart_upload_gets_the_checksum_boto3_gives_the_same_bytes(site_factory: SiteFactory,
                                                                      moto_server: Any, tmp_path: Path) -> None:
    """The upload declares CRC32 and completes with each part's CRC32, as ``upload_file`` does: the object's
    CRC32 is the one boto3 gives the same bytes in the same 8 MiB parts (undeclared, it had none)."""
    src, dst = site_factory("file", "src"), site_factory("s3", "dst")
    data = os.urandom(3 * 8 * 2**20 + 5)  # four parts
    populate(src, {"big.bin": data})
    entry = FileEntry("big.bin", len(data), _sha(data))
    copy_files(src.fs, src.root, dst.fs, dst.root, [entry])
    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    bucket, _, prefix = dst.root.partition("/")
    ours = client.head_object(Bucket=bucket, Key=f"{prefix}/big.bin", ChecksumMode="ENABLED")
    (tmp_path / "big.bin").write_bytes(data)
    client.upload_file(str(tmp_path / "big.bin"), bucket, "boto3/big.bin")
    theirs = client.head_object(Bucket=bucket, Key="boto3/big.bin", ChecksumMode="ENABLED")
    assert ours["ChecksumCRC32"] == theirs["ChecksumCRC32"]
    assert ours["ContentLength"] == len(data)
    assert verify_files(dst.fs, dst.root, [entry]) == []


def test_a_client_that_computes_no_checksums_declares_none(moto_server: Any, site_factory: SiteFactory) -> None:
    """With ``request_checksum_calculation="when_required"`` the parts carry no CRC32: the upload declares
    no algorithm, and the object is still published whole and verified."""
    import s3fs

    src = site_factory("file", "src")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs={"request_checksum_calculation": "when_required"},
                           **moto_server.storage_options())
    bucket = "tr-nosums"
    fs.mkdir(bucket)
    assert part_checksum(fs) is None
    assert part_checksum(s3_fs(moto_server)) == "CRC32"  # the default client computes them
    assert part_checksum(LocalFileSystem()) is None
    data = os.urandom(2 * 8 * 2**20 + 3)
    populate(src, {"big.bin": data})
    entry = FileEntry("big.bin", len(data), _sha(data))
    copy_files(src.fs, src.root, fs, f"{bucket}/out", [entry])
    fs.invalidate_cache()
    assert fs.cat_file(f"{bucket}/out/big.bin") == data
    assert verify_files(fs, f"{bucket}/out", [entry]) == []
