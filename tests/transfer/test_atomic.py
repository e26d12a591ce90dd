"""Atomic publish: a copy killed with SIGKILL mid-file leaves nothing under the final name.

The child process copies from a FIFO, so the test decides exactly how far the copy gets: it feeds
10 MiB, waits until the destination holds unpublished data (an unnamed O_TMPFILE file held open by the
child on a local disk, a part file over SFTP, an S3 multipart upload with a part), kills the child,
and checks that no file or object has the final name -- and, locally, that nothing at all is left. A
retry then completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from fsspec.implementations.local import LocalFileSystem

from tests.servers import wait_until
from tests.transfer.conftest import KINDS, Site, SiteFactory, child_env
from transfer import FileEntry, copy_files
from transfer.paths import is_part_name

FED = 10 * 2**20


def _open_fifo_writer(fifo: Path) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO until the child opens the FIFO for reading
        return None


def _unnamed_files(pid: int, directory: Path) -> list[int]:
    """Sizes of the files ``pid`` holds open that were made unnamed (O_TMPFILE) in ``directory``."""
    sizes = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(f"{directory}/#") and target.endswith(" (deleted)"):
                sizes.append(os.stat(fd).st_size)
        except OSError:  # closed in between
            continue
    return sizes


def _unpublished_evidence(dst: Site, request: pytest.FixtureRequest, pid: int) -> Callable[[], bool]:
    if dst.kind == "s3":
        moto = request.getfixturevalue("moto_server")
        client = boto3.client("s3", endpoint_url=moto.endpoint_url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        bucket, prefix = dst.root.split("/", 1)

        def has_part() -> bool:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return any(
                client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
                for u in uploads if u["Key"] == f"{prefix}/big.bin"
            )
        return has_part
    assert dst.local_dir is not None
    local_dir = dst.local_dir

    def part_file_grew() -> bool:  # a part file (SFTP), or an unnamed file (local O_TMPFILE)
        if any(p.stat().st_size >= 8 * 2**20 for p in local_dir.glob(".big.bin.part-*")):
            return True
        return dst.kind == "file" and any(size >= 8 * 2**20 for size in _unnamed_files(pid, local_dir))
    return part_file_grew


@pytest.mark.parametrize("dst_kind", KINDS)
def test_killed_copy_publishes_nothing_and_a_retry_completes(
    dst_kind: str, site_factory: SiteFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dst = site_factory(dst_kind, "dst")
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    payload = random.Random(5).randbytes(12 * 2**20)
    entry = FileEntry("big.bin", len(payload), hashlib.sha256(payload).hexdigest())
    fifo = src_dir / "big.bin"
    os.mkfifo(fifo)
    spec: dict[str, Any] = {"op": "copy", "src": {"kind": "file", "root": str(src_dir)}, "dst": dst.spec,
                            "entries": [entry.to_dict()], "chunk_size": 2**20}
    child = subprocess.Popen([sys.executable, "-m", "tests.transfer._child", json.dumps(spec)],
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = -1
    try:
        fd = wait_until(lambda: _open_fifo_writer(fifo), 30, "the child to open the source FIFO")
        os.set_blocking(fd, True)
        os.write(fd, payload[:FED])  # blocks until the child has read nearly all of it
        wait_until(_unpublished_evidence(dst, request, child.pid), 30, "unpublished data at the destination")
        assert not dst.exists("big.bin")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        if fd >= 0:
            os.close(fd)
    assert child.returncode == -signal.SIGKILL
    assert not dst.exists("big.bin"), "a killed copy published a partial file"
    assert "big.bin" not in dst.listing()
    if dst_kind == "file":
        assert dst.listing() == [], "the killed copy's unnamed file outlived it"

    # the retry, from a regular file this time, publishes the whole file
    fifo.unlink()
    (src_dir / "big.bin").write_bytes(payload)
    report = copy_files(LocalFileSystem(), str(src_dir), dst.fs, dst.root, [entry], link=False)
    assert report.files == 1 and report.entries[0].sha256 == entry.sha256
    assert dst.read("big.bin") == payload
    assert [n for n in dst.listing() if not is_part_name(n)] == ["big.bin"]
