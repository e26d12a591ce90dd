"""Relative-name safety, manifest entries, the transient-error classification and the public API."""

from __future__ import annotations

import errno
import hashlib
import socket
from pathlib import Path
from typing import Any

import paramiko
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from hypothesis import given
from hypothesis import strategies as st

import transfer
from tests.transfer.conftest import SiteFactory, populate
from transfer import FileEntry, TransientError, UnsafePathError, is_transient, normalize_relpath, scan
from transfer.paths import is_part_name, part_name


@pytest.mark.parametrize(("raw", "clean"), [
    ("a", "a"), ("./a//b/", "a/b"), ("a/./b", "a/b"), ("dir/file.txt", "dir/file.txt"), ("..a/b..", "..a/b.."),
])
def test_names_are_normalised(raw: str, clean: str) -> None:
    assert normalize_relpath(raw) == clean


@pytest.mark.parametrize("bad", ["", ".", "/", "//", "/abs", "..", "a/..", "../a", "a/../b", "a\x00", "a\nb",
                                 "a\\b", "C:x", "./C:x", ".//c:", "x" * 256])
def test_unsafe_names_are_refused_with_the_name_in_the_message(bad: str) -> None:
    with pytest.raises(UnsafePathError) as info:
        normalize_relpath(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.path == bad or bad == ""


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d"]), min_size=1, max_size=6))
def test_a_normalised_name_never_climbs_out_of_its_root(parts: list[str]) -> None:
    try:
        name = normalize_relpath("/".join(parts))
    except UnsafePathError:
        assert ".." in parts or parts[0] == "" or all(p in ("", ".") for p in parts)  # climbs, absolute, empty
        return
    assert not name.startswith("/") and ".." not in name.split("/") and "" not in name.split("/")


def test_part_names_are_hidden_siblings_that_fit_in_a_file_name() -> None:
    tmp = part_name("/data/du/dir/" + "n" * 255, "0123456789abcdef")
    assert tmp.startswith("/data/du/dir/.n") and len(tmp.rsplit("/", 1)[1].encode()) <= 255
    assert is_part_name(tmp) and is_part_name(part_name("f.txt", "0123456789abcdef"))
    assert not is_part_name("f.txt") and not is_part_name(".hidden")


def test_file_entries_validate_their_fields() -> None:
    e = FileEntry.from_dict({"path": "./x/y", "size": 3, "sha256": "A" * 64})
    assert e == FileEntry("x/y", 3, "a" * 64) and e.to_dict() == {"path": "x/y", "size": 3, "sha256": "a" * 64}
    with pytest.raises(ValueError, match="size"):
        FileEntry("x", -1)
    with pytest.raises(ValueError, match="sha256"):
        FileEntry("x", 1, "abc")
    with pytest.raises(UnsafePathError):
        FileEntry("../x")


def test_scan_builds_a_manifest_and_skips_part_files(site_factory: SiteFactory) -> None:
    site = site_factory("file")
    populate(site, {"a/b.txt": b"hello", "c.bin": b"", ".c.bin.part-0123456789abcdef": b"partial"})
    assert scan(site.fs, site.root) == [
        FileEntry("a/b.txt", 5, hashlib.sha256(b"hello").hexdigest()),
        FileEntry("c.bin", 0, hashlib.sha256(b"").hexdigest()),
    ]


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject")


@pytest.mark.parametrize("exc", [
    ConnectionError("reset"), ConnectionResetError(), BrokenPipeError(), TimeoutError(), socket.gaierror(),
    EOFError(), OSError(errno.ECONNREFUSED, "refused"), paramiko.SSHException("Server connection dropped"),
    paramiko.ChannelException(2, "Connect failed"), EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), _client_error("SlowDown"), _client_error("503"),
    _client_error("InternalError"), TransientError("told so"),
])
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    FileNotFoundError(), PermissionError(), IsADirectoryError(), ValueError("bug"), KeyError("k"),
    paramiko.AuthenticationException("denied"), paramiko.BadAuthenticationType("no", ["publickey"]),
    NoCredentialsError(), _client_error("AccessDenied"), _client_error("NoSuchKey"),
    _client_error("InvalidAccessKeyId"), transfer.ChecksumMismatchError("bad"),
])
def test_permanent_errors_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_library_error_is_judged_by_its_cause() -> None:
    """s3fs turns ClientErrors into OSErrors; the cause decides."""
    slow = OSError(errno.EIO, "wrapped")
    slow.__cause__ = _client_error("SlowDown")
    denied = PermissionError("wrapped")
    denied.__cause__ = ConnectionError("the cause does not overrule a permanent error")
    assert is_transient(slow) and not is_transient(denied)


def test_the_public_api_is_exactly_what_all_lists() -> None:
    public = {name for name in dir(transfer) if not name.startswith("_")}
    modules = {"cache", "copy", "digests", "endpoints", "errors", "factory", "fastpath", "manifest", "objectstore",
               "paths", "sftpio", "verified", "verify"}
    assert public - modules == set(transfer.__all__)


def test_the_package_imports_only_the_standard_library_and_fsspec() -> None:
    """transfer sits below pilotdata and agent, and takes s3fs/paramiko only through the objects it is given."""
    import ast
    import sys

    allowed = set(sys.stdlib_module_names) | {"fsspec", "transfer", "paramiko", "blake3", "xxhash"}
    lazy = {"paramiko", "blake3", "xxhash"}  # optional: imported inside the functions that need them
    package = Path(transfer.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{module.name} imports {name}"
                if name.split(".")[0] in lazy:  # only lazily, inside a function
                    assert node.col_offset > 0, f"{module.name} imports {name} at module level"


def test_sftp_connections_verify_the_host_key(sshd_server: Any, tmp_path: Path) -> None:
    """The test filesystem refuses a server whose key is not in known_hosts (no auto-accept)."""
    from tests.transfer.conftest import KnownHostsSFTP

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        KnownHostsSFTP(sshd_server.host, known_hosts=str(empty), port=sshd_server.port,
                       username=sshd_server.user, key_filename=str(sshd_server.key_file), look_for_keys=False,
                       allow_agent=False)
