"""The host a benchmark ran on: its processor, and how fast its Python runs pilot-data's own kind of work.

Figures from different hosts are not comparable by their ratios alone. ``throughput.py`` compares Python
(the agent, the client, the history writer) with a C loop of ``fork``/``exec``, and ``staging.py``'s
small files are half Python. Hosts differ far more in Python than in the kernel's calls: the same code
gave 0.68-0.71x of xargs on one host and 0.40-0.45x on another, whose Python ran such work 3x slower
(docs/benchmarks.md). Both scripts print :func:`host_line` next to their figures.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

__all__ = ["host_line"]


def host_line() -> str:
    """``host: <processor>; Python <version> parses a stored CU description in <us> us``.

    The probe is what an agent does for every CU it claims: parse the stored description of a
    ``/bin/true`` CU (``ComputeUnitDescription.from_dict``), best of 5 x 2,000 (29.4 us on the slower of the
    two hosts above, 9.8 us on the other).
    """
    model = "unknown processor"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from pilotdata.descriptions import ComputeUnitDescription

    stored = ComputeUnitDescription.from_dict({"executable": "/bin/true", "shell": False}).to_dict()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(2000):
            ComputeUnitDescription.from_dict(stored)
        best = min(best, (time.perf_counter() - start) / 2000)
    return (f"host: {model}; Python {sys.version.split()[0]} parses a stored CU description in "
            f"{best * 1e6:.1f} us (the agent's work per CU claimed)")
