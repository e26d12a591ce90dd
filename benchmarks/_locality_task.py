"""The ComputeUnit program of ``benchmarks/locality.py``: read the whole database and a query chunk, then search.

Reads every byte of the database (``--db``) and of the query chunk (``--chunk``), either from files
in the sandbox (staged there by the agent, through the pilot cache) or -- with ``--ssh USER@HOST`` --
streamed from the store by the task itself with the OpenSSH client (``ssh ... cat PATH``), which is
what a task does when nothing stages for it (the "naive" policy). The search itself is modelled as
``--seconds`` of wall time, so the benchmark measures data placement, not this shared machine's CPU.

Exit codes: 0 done; 3 the database had the wrong size (a short read must never count as a run);
4 the ssh stream failed. Prints ``db_bytes=N chunk_bytes=M chunk_adler32=X``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from typing import IO

_BLOCK = 1 << 20


@contextlib.contextmanager
def _source(path: str, args: argparse.Namespace) -> Iterator[IO[bytes]]:
    """A binary stream of ``path``: the local file, or ``ssh ... cat path`` with ``--ssh``."""
    if not args.ssh:
        with open(path, "rb") as f:
            yield f
        return
    argv = [
        "ssh", "-F", "/dev/null", "-T", "-p", str(args.ssh_port), "-i", args.ssh_key,
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={args.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        args.ssh, f"cat -- {shlex.quote(path)}",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"ssh stream of {path} failed ({proc.returncode}): {err.decode(errors='replace').strip()}",
                  file=sys.stderr)
            sys.exit(4)


def read_all(path: str, args: argparse.Namespace, checksum: bool = False) -> tuple[int, int]:
    """``(bytes, adler32 or 0)`` of everything in ``path``."""
    total, digest = 0, 1
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with _source(path, args) as stream:
        while True:
            n = stream.readinto(view)  # type: ignore[attr-defined]  # IO[bytes] lacks readinto in typeshed
            if not n:
                break
            total += n
            if checksum:
                digest = zlib.adler32(view[:n], digest)
    return total, (digest if checksum else 0)


def main(argv: list[str] | None = None) -> int:
    """Run one task; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", required=True, help="database file (sandbox name, or remote path with --ssh)")
    p.add_argument("--chunk", required=True, help="query chunk file (likewise)")
    p.add_argument("--expect-db-bytes", type=int, required=True)
    p.add_argument("--seconds", type=float, default=0.0, help="modelled search time")
    p.add_argument("--ssh", default=None, help="USER@HOST: stream both files from this host with ssh")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--ssh-key", default=None)
    p.add_argument("--known-hosts", default=None)
    args = p.parse_args(argv)
    db_bytes, _ = read_all(args.db, args)
    if db_bytes != args.expect_db_bytes:
        print(f"database {args.db}: read {db_bytes} bytes, expected {args.expect_db_bytes}", file=sys.stderr)
        return 3
    chunk_bytes, chunk_sum = read_all(args.chunk, args, checksum=True)
    time.sleep(args.seconds)  # the search: modelled, see the module docstring
    print(f"db_bytes={db_bytes} chunk_bytes={chunk_bytes} chunk_adler32={chunk_sum:08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
