"""What ``pdata`` prints: JSON or aligned tables on stdout, progress bars and messages on stderr.

Every listing/show command builds one JSON-able value and hands it to :func:`emit` with a function
that prints it for humans; ``--json`` prints the value instead. Progress bars (:func:`byte_progress`,
:func:`count_progress`) go to stderr, so ``--json`` output and ``$(pdata put ...)`` stay clean.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pilotdata.cli.options import CliContext


def emit(cli: CliContext, data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else call ``human()``."""
    if cli.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "(none)") -> list[str]:
    """``rows`` under ``headers`` in aligned columns, as lines (``[empty]`` when there are no rows)."""
    if not rows:
        return [empty]
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str = "(none)") -> None:
    """Print ``rows`` under ``headers`` in aligned columns (``empty`` when there are no rows)."""
    for line in table_lines(headers, rows, empty=empty):
        click.echo(line)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print ``name: value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {'-' if value in (None, '') else value}")


def human_size(nbytes: int | None) -> str:
    """``1.5 MB`` style (decimal units, as the sizes users type)."""
    if nbytes is None:
        return "-"
    size = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{nbytes} B"  # pragma: no cover


def human_time(epoch: float | None) -> str:
    """Local ``YYYY-mm-dd HH:MM:SS`` of an epoch time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def human_age(epoch: float | None, now: float | None = None) -> str:
    """How long ago (or, with ``now``, how long until ``now``): ``12s``, ``5m``, ``3h``, ``2d``."""
    if epoch is None:
        return "-"
    secs = max(0.0, (now or time.time()) - epoch)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= length:
            return f"{int(secs // length)}{unit}"
    return f"{int(secs)}s"


def human_duration(seconds: float | None) -> str:
    """A duration people read at a glance: ``< 1 ms``, ``340 ms``, ``2.5 s``, ``4 min 10 s``, ``2 h 5 min``."""
    if seconds is None:
        return "-"
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "never"
    secs = abs(float(seconds))
    sign = "-" if seconds < 0 else ""
    if secs < 0.001:
        return "0 s" if secs == 0 else "< 1 ms"
    if secs < 1:
        return f"{sign}{secs * 1000:.0f} ms"
    if secs < 60:
        return f"{sign}{secs:.1f} s"
    if secs < 3600:
        return f"{sign}{int(secs // 60)} min {int(secs % 60)} s"
    if secs < 86400:
        return f"{sign}{int(secs // 3600)} h {int(secs % 3600 // 60)} min"
    return f"{sign}{int(secs // 86400)} d {int(secs % 86400 // 3600)} h"


def labels_text(labels: dict[str, Any] | None) -> str:
    """``k=v,k=v`` (sorted) or ``-``."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def warn(message: str) -> None:
    """A one-line note on stderr."""
    click.echo(f"pdata: {message}", err=True)


class _ByteBar:
    """Draws the transfer engine's ``progress(bytes_delta, files_done)`` calls as a bar of ``total`` bytes.

    Deltas may be negative (a failed attempt's bytes taken back before a retry): the bar never moves
    backwards, it waits until the bytes delivered catch up with what it shows.
    """

    def __init__(self, label: str, total: int, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = max(int(total), 1)
        self.enabled = enabled
        self._bar: Any = None
        self._delivered = 0
        self._shown = 0
        self._clock = clock
        self._started: float | None = None

    def info(self) -> str:
        """``"12.0 MB/100.0 MB, 4.0 MB/s"``: bytes delivered, of the total, and the mean rate so far."""
        elapsed = (self._clock() - self._started) if self._started is not None else 0.0
        rate = self._shown / 1e6 / elapsed if elapsed > 0 else 0.0
        return f"{human_size(self._shown)}/{human_size(self.total)}, {rate:.1f} MB/s"

    def __call__(self, delta: int, files_done: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._started = self._clock()
            self._bar = click.progressbar(length=self.total, label=self.label, show_percent=True,
                                          item_show_func=lambda _item: self.info(),
                                          file=sys.stderr)
            self._bar.__enter__()
        self._delivered = max(0, self._delivered + delta)
        step = min(self._delivered, self.total) - self._shown
        if step > 0:
            self._bar.update(step)
            self._shown += step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@contextmanager
def byte_progress(cli: CliContext, label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A transfer ``progress(bytes_delta, files_done)`` callback drawing a bar of ``total`` bytes on stderr
    (a no-op when bars are off)."""
    bar = _ByteBar(label, total, cli.show_progress())
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def count_progress(cli: CliContext, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """An ``update(finished_count)`` callback drawing a bar of ``total`` items on stderr (or nothing)."""
    if not cli.show_progress() or total <= 0:
        yield lambda _n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                           show_eta=False) as bar:
        state = {"done": 0}

        def update(done: int) -> None:
            if done > state["done"]:
                bar.update(done - state["done"])
                state["done"] = done

        yield update
