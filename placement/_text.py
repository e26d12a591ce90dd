"""Number formatting shared by the explanations (bytes, rates, seconds). Private to placement."""

from __future__ import annotations

import math

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def fmt_bytes(nbytes: float) -> str:
    """``1500000000`` -> ``"1.5 GB"`` (decimal units, as bandwidths are quoted)."""
    value = float(nbytes)
    for unit in _UNITS:
        if abs(value) < 999.95 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_rate(bps: float) -> str:
    """Bytes per second -> ``"100.0 MB/s"``."""
    return fmt_bytes(bps) + "/s"


def fmt_seconds(seconds: float) -> str:
    """Seconds with a precision that suits their size (``2.50 s``, ``4 ms``, ``< 1 ms``); ``inf`` -> ``"never"``."""
    if math.isinf(seconds):
        return "never"
    if seconds == 0:
        return "0 s"
    if abs(seconds) < 0.001:  # never "1.5e-07 s": below a millisecond the figure means nothing to a reader
        return "< 1 ms" if seconds > 0 else "> -1 ms"
    if abs(seconds) < 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"
