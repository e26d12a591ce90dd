"""Which checksum algorithm the files of a new DataUnit are recorded with.

Every file in a DataUnit's manifest names the algorithm of its checksum (``file:<path>`` ->
``{"size": n, "<algorithm>": hex}``, :mod:`pilotdata.records`), and every copy and verification of
that file -- a replication, an agent's fetch into its cache, ``pdata get``, ``pdata verify`` --
computes that same algorithm. So the choice below applies only to files being *added* (an upload,
``add_files``, a CU's outputs); files already recorded keep theirs, and a DataUnit recorded with
sha256 before there was a choice keeps verifying, with the same cache key, as it always did.

======================  ===========================================================================
setting                 where
======================  ===========================================================================
``checksum=``           :class:`~pilotdata.data.ReplicaManager` (the library's DataUnit operations)
``--checksum``          ``pdata`` (also the config file key ``checksum``)
``PDATA_CHECKSUM``      the environment of any process that adds files: clients, the CLI, agents
(default)               ``blake3`` when its library is installed (the ``fast-hash`` extra), else
                        ``sha256`` -- silently, so an install without the extra works as before
======================  ===========================================================================

The algorithms (:mod:`transfer.digests`): ``blake3`` is cryptographic and hashes about 6 GB/s on one
core here, so a verified fetch runs near ``cp`` instead of at sha256's 1.4-1.8 GB/s; ``xxh128``
(XXH3-128) is faster still but not cryptographic -- it catches any accidental corruption, not a
deliberate collision; ``sha256`` is always available and what ``sha256sum`` and S3's checksums
speak. Naming ``blake3`` or ``xxh128`` where its library is missing is an error with the install
hint, never a silent fallback.
"""

from __future__ import annotations

import os

from pilotdata.errors import DescriptionError, did_you_mean
from transfer.digests import ALGORITHMS, available

__all__ = ["CHECKSUM_ENV", "PREFERRED", "check_checksum", "default_checksum"]

CHECKSUM_ENV = "PDATA_CHECKSUM"
"""The environment variable that sets the algorithm for new files."""
PREFERRED = "blake3"
"""The default where its library is installed."""
_PACKAGE = {"blake3": "blake3", "xxh128": "xxhash"}


def check_checksum(name: str, *, field: str = "checksum") -> str:
    """The algorithm ``name`` (any case) if it is known and installed here; else a
    :class:`~pilotdata.errors.DescriptionError` naming ``field``, the choices, or the install command."""
    wanted = str(name).strip().lower()
    if wanted not in ALGORITHMS:
        raise DescriptionError(f"{field}: {name!r} is not a checksum algorithm; choose one of "
                               f"{', '.join(ALGORITHMS)}{did_you_mean(wanted, ALGORITHMS)}", field=field, value=name)
    if not available(wanted):
        raise DescriptionError(f"{field}: {wanted} needs the {_PACKAGE[wanted]!r} package, which is not installed "
                               f"here: pip install 'pilot-data[fast-hash]' (or choose sha256)", field=field,
                               value=name)
    return wanted


def default_checksum() -> str:
    """``PDATA_CHECKSUM`` when set (checked: :func:`check_checksum`), else :data:`PREFERRED` when its
    library is installed, else ``sha256``."""
    text = os.environ.get(CHECKSUM_ENV, "").strip()
    if text:
        return check_checksum(text, field=CHECKSUM_ENV)
    return PREFERRED if available(PREFERRED) else "sha256"
