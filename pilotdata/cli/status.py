"""``pdata status``: ComputeUnits by state per place (each pilot, the shared queue, unbound), live pilots
and their slots; ``--watch`` redraws it in place until Ctrl-C.

The counts come from :meth:`pilotdata.inspect.Inspector.counts` (index counters plus the live
in-progress lists), so the header and the rows are one set of numbers: the header's "shared queue" is
the shared-queue row's Pending. A CU waits under the pilot it is bound to (busy or not), a requeued
one under the shared queue, never under a pilot that ended.

``--watch`` draws frames with plain ANSI control sequences (cursor home, clear to end of line and of
screen), which every terminal and SSH session understands; when stdout is not a terminal, frames are
printed one after the other. Ctrl-C ends it with status 0 and the cursor restored.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pilotdata.cli.options import CliContext, json_option, pass_cli, reads, run_option
from pilotdata.cli.output import emit, human_time, table_lines
from pilotdata.inspect import SHARED, StateCounts
from pilotdata.session import Session
from pilotdata.states import Kind, states_of

if TYPE_CHECKING:
    from pilotdata.services import PilotComputeService

PLACE_NAMES = {SHARED: "(shared queue)"}
"""How the shared queue is named in tables."""


def refresh_pilots(session: Session, pcs: PilotComputeService | None = None) -> None:
    """Reconcile pilots with their launchers and take back the work of lost ones (through ``pcs``, kept by
    a caller that refreshes often, so launchers and their SSH connections are reused)."""
    from pilotdata.services import PilotComputeService

    if pcs is not None:
        pcs.refresh()
        return
    own = PilotComputeService(session=session)
    try:
        own.refresh()
    finally:
        own.close()


def place_name(place: str) -> str:
    """A place as tables show it: the pilot id, ``(shared queue)`` or ``(unbound)``."""
    return PLACE_NAMES.get(place, place)


def snapshot(cli: CliContext, run_ref: str | None, pcs: PilotComputeService | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-able value (plus ``_counts``, the counts themselves)."""
    session = cli.session()
    refresh_pilots(session, pcs)
    ins = cli.inspector()
    run = cli.run(run_ref) if run_ref else None
    counts = ins.counts(run.id if run else None)
    live = [p for p in ins.pilots(include_ended=False)]
    coord = session.coord
    du_states = Counter(r.state for r in coord.get_many(Kind.DU, coord.list_ids(Kind.DU)) if r is not None)
    return {
        "url": session.url, "namespace": session.namespace, "run": run.id if run else None,
        "current_run": ins.current_run(), "time": time.time(),
        "pilots": [{"id": p.id, "state": p.state, "site": p.site, "slots": p.slots, "busy": p.busy_slots,
                    "claimed": p.claimed, "queued": p.queued, "walltime_left": p.walltime_left} for p in live],
        "compute_units": {"total": counts.total,
                          "by_place": {place_name(k): v for k, v in counts.rows.items()}},
        "shared_queue": counts.shared_queue,
        "data_units": dict(du_states),
        "_counts": counts,
    }


def render(data: dict[str, Any]) -> list[str]:
    """The human view of a :func:`snapshot`, as lines."""
    counts: StateCounts = data["_counts"]
    live = data["pilots"]
    scope = f"run {data['run']}" if data["run"] else "all runs" + (
        f" (current run: {data['current_run']})" if data["current_run"] else "")
    lines = [f"coordination: {data['url']} (namespace {data['namespace']}); {scope}",
             f"pilots: {len(live)} live, {sum(p['slots'] or 0 for p in live)} slots, "
             f"{sum(p['busy'] for p in live)} busy; shared queue: {counts.shared_queue} Pending", ""]
    total = counts.total
    states = [s for s in states_of(Kind.CU) if total.get(s)]
    order = {p["id"]: i for i, p in enumerate(live)}

    def key(place: str) -> tuple[int, int, str]:
        if place == SHARED:
            return (2, 0, place)
        if place not in counts.pilot_states:
            return (3, 0, place)
        return (0 if place in order else 1, order.get(place, 0), place)

    rows = []
    for place in sorted(counts.rows, key=key):
        c = counts.rows[place]
        pilot_state = counts.pilot_states.get(place)
        rows.append([place_name(place), counts.sites.get(place) or "-", pilot_state or "-",
                     *[c.get(s, 0) for s in states], sum(c.values())])
    if rows and any(total.values()):
        rows.append(["TOTAL", "", "", *[total[s] for s in states], sum(total.values())])
    lines += table_lines(["PLACE", "SITE", "PILOT STATE", *states, "ALL"], rows, empty="(no compute units)")
    if data["data_units"]:
        lines += ["", "data units: " + ", ".join(f"{n} {s}" for s, n in sorted(data["data_units"].items()))]
    return lines


def watch(frame: Callable[[], list[str]], interval: float, count: int | None) -> None:
    """Redraw ``frame()`` every ``interval`` seconds in place (see the module docstring).

    Ctrl-C (SIGINT) sets a flag instead of raising ``KeyboardInterrupt`` wherever the main thread happens to
    be: an exception thrown into a lock or a coordination call half-way through a frame could leave a
    thread waiting forever and the command hanging at exit. The frame being drawn is finished, then the
    loop ends and the cursor is restored. A second Ctrl-C, while a frame is stuck, raises at once. The
    handler takes no lock (it runs inside whatever the main thread was doing, a lock's own code
    included): it sets a plain flag and writes a byte to the pipe the loop waits on between frames.
    """
    out = sys.stdout
    tty = out.isatty()
    stopped = False
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    between_frames = select.poll()
    between_frames.register(wake_read, select.POLLIN)
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame_: object) -> None:
        nonlocal stopped
        if stopped:  # a second Ctrl-C while a frame is stuck (coordination unreachable): give up now
            raise KeyboardInterrupt
        stopped = True
        try:
            os.write(wake_write, b"\0")
        except BlockingIOError:  # the pipe is full of earlier wake-ups: the loop wakes anyway
            pass

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupted)
    if tty:
        out.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear the screen once
    shown = 0
    try:
        while not stopped:
            lines = frame()
            if stopped:
                return
            if tty:
                width = shutil.get_terminal_size().columns
                height = shutil.get_terminal_size().lines
                body = [line[:width] for line in lines[: max(1, height - 1)]]
                out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in body) + "\x1b[J")
            else:
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            shown += 1
            if count is not None and shown >= count:
                return
            between_frames.poll(interval * 1000)
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        os.close(wake_read)
        os.close(wake_write)
        if tty:
            out.write("\x1b[?25h")
            out.flush()


@click.command("status")
@run_option("Only this run's ComputeUnits  [default: every run]")
@click.option("--watch", "-w", "watching", is_flag=True, help="Redraw in place until Ctrl-C (works over SSH).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after this many redraws.")
@json_option
@reads
@pass_cli
def status(cli: CliContext, run_ref: str | None, watching: bool, interval: float, count: int | None) -> None:
    """ComputeUnits by state per pilot, the shared queue and unbound ones; live pilots and their slots.

    A CU bound to a pilot counts under it (busy or idle); a requeued one under the shared queue.
    """
    if watching:
        from pilotdata.services import PilotComputeService

        if cli.json:
            raise click.UsageError("--watch draws a live view; it does not combine with --json")
        cli.run(run_ref)  # an unknown run fails now, before the screen is cleared
        pcs = PilotComputeService(session=cli.session())

        def frame() -> list[str]:
            data = snapshot(cli, run_ref, pcs)
            return [f"pdata status: {human_time(data['time'])} (every {interval:g} s; Ctrl-C to stop)", "",
                    *render(data)]

        try:
            watch(frame, interval, count)
        finally:
            pcs.close()
        return
    data = snapshot(cli, run_ref)
    shown = {k: v for k, v in data.items() if not k.startswith("_")}
    emit(cli, shown, lambda: echo_lines(render(data)))


def echo_lines(lines: list[str]) -> None:
    """Print ``lines`` on stdout."""
    for line in lines:
        click.echo(line)


COMMANDS = [status]
"""The status command."""
