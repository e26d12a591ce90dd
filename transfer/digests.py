"""Checksum algorithms: which ones a manifest may name, how fast they are, how to compute them.

A manifest entry names its algorithm (:class:`~transfer.manifest.FileEntry`, ``algorithm``); every
copy and verification of that file computes the same one, so a manifest written with sha256 keeps
verifying with sha256, and one written with a faster algorithm is checked at that speed.

=============  ==============================  ==========================================  ===========
name           library                         what it is                                  single core
=============  ==============================  ==========================================  ===========
``sha256``     hashlib (always there)          cryptographic; ``sha256sum``, S3's          ~1.8 GB/s
                                               ``x-amz-checksum-sha256`` speak it          (SHA-NI)
``blake3``     ``blake3`` (PyPI, Rust crate)   cryptographic; ``b3sum``                    ~6 GB/s
``xxh128``     ``xxhash`` (PyPI, C library)    non-cryptographic 128-bit XXH3; catches     memory speed
                                               any accidental corruption; ``xxh128sum``    (> 20 GB/s)
=============  ==============================  ==========================================  ===========

(Figures measured on the 2-core development VM, 8 MiB chunks; ``docs/benchmarks.md``.) sha256 stays
the default for new manifests: the DataUnit layer stores it, and other tools check it. ``xxh128`` is
the one that lets a verified local copy run near ``cp`` speed (a 1 GiB file copies in about the
time sha256 alone needs to read it); choose ``blake3`` where a manifest must also resist deliberate
collisions. ``blake3`` and ``xxhash`` are optional: the extra ``fast-hash`` installs both, and naming
an algorithm whose library is missing raises a :class:`ValueError` with the install hint.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "Hash", "available", "check_algorithm", "check_digest", "cheap",
           "hash_bytes", "new_hash"]

DEFAULT_ALGORITHM = "sha256"
ALGORITHMS = ("sha256", "blake3", "xxh128")
"""Every algorithm a manifest may name."""

_HEX_DIGITS = {"sha256": 64, "blake3": 64, "xxh128": 32}
_PACKAGE = {"blake3": "blake3", "xxh128": "xxhash"}
_CHEAP = frozenset({"xxh128"})
_HEX = {n: re.compile(f"[0-9a-f]{{{d}}}") for n, d in _HEX_DIGITS.items()}


class Hash(Protocol):
    """What the engine needs of a hash object (hashlib's interface)."""

    def update(self, data: Any, /) -> object:
        """Add bytes."""

    def hexdigest(self) -> str:
        """The digest so far, as lowercase hex."""


def check_algorithm(name: str) -> str:
    """``name`` if it is a known algorithm, else :class:`ValueError` listing the known ones."""
    if name not in _HEX_DIGITS:
        raise ValueError(f"checksum algorithm {name!r} is not one of {', '.join(ALGORITHMS)}")
    return name


def check_digest(algorithm: str, digest: str, *, what: str = "digest") -> str:
    """The lowercase hex ``digest`` if it has the length ``algorithm`` produces, else ValueError."""
    value = str(digest).lower()
    if not _HEX[check_algorithm(algorithm)].fullmatch(value):
        raise ValueError(f"{what} is not {_HEX_DIGITS[algorithm]} hex digits of {algorithm}: {digest!r}")
    return value


def available(name: str) -> bool:
    """Whether ``name``'s library is installed here."""
    try:
        new_hash(name)
    except ValueError:
        return False
    return True


def cheap(name: str) -> bool:
    """Whether hashing costs less than moving the bytes (so a copy need not hash in another thread)."""
    return name in _CHEAP


def new_hash(name: str) -> Hash:
    """A fresh hash object for algorithm ``name`` (each releases the GIL on large chunks)."""
    if name == "sha256":
        return hashlib.sha256()
    check_algorithm(name)
    try:
        if name == "blake3":
            from blake3 import blake3

            made: Hash = blake3()
            return made
        import xxhash

        made = xxhash.xxh3_128()
        return made
    except ImportError as exc:
        raise ValueError(
            f"checksum algorithm {name!r} needs the {_PACKAGE[name]!r} package: "
            f"pip install 'pilot-data[fast-hash]' (or pip install {_PACKAGE[name]})"
        ) from exc


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blake3_hex(data: bytes) -> str:
    from blake3 import blake3

    return str(blake3(data).hexdigest())


@functools.cache
def hash_bytes(name: str) -> Callable[[bytes], str]:
    """A function returning the hex digest of one buffer in algorithm ``name`` (for files read whole).

    Looked up once per algorithm (the copy engine asks for it per small file). Raises :class:`ValueError`
    as :func:`new_hash` does for an unknown algorithm or a missing library.
    """
    new_hash(name)
    if name == "sha256":
        return _sha256_hex
    if name == "blake3":
        return _blake3_hex
    import xxhash

    one_shot: Callable[[bytes], str] = xxhash.xxh3_128_hexdigest
    return one_shot
