"""``pdata gc``: remove what is no longer needed, by the rules of :mod:`pilotdata.cleanup`.

``--dry-run`` prints the plan and changes nothing. Without it, each item is removed in turn and
printed as it goes; the history keeps the record of everything that happened.
"""

from __future__ import annotations

from typing import Any

import click

from pilotdata.cli.options import CliContext, json_option, pass_cli, reads
from pilotdata.cli.output import emit, human_size, table, warn
from pilotdata.errors import PilotDataError
from pilotdata.inspect import CUFilter

AGE_HELP = "an age: 90s, 10m, 2h, 7d"


class Age(click.ParamType):  # type: ignore[type-arg]
    """A duration: ``90s``, ``10m``, ``2h``, ``7d``, ``1w`` (or a number of seconds)."""

    name = "AGE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Seconds."""
        if isinstance(value, float):
            return value
        text = str(value).strip()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
        try:
            seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
        except ValueError:
            self.fail(f"{value!r} is not {AGE_HELP}", param, ctx)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return seconds


AGE = Age()


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@click.option("--runs-older-than", type=AGE, default="7d", show_default=True,
              help="Remove the records of finished runs idle this long (their CUs, sandboxes, the run).")
@click.option("--data", "with_data", is_flag=True,
              help="With those runs, also remove their DataUnits and delete the replicas' files.")
@click.option("--sandboxes-older-than", type=AGE, default="1d", show_default=True,
              help="Remove sandboxes of CUs ended this long ago, and the directories (sandboxes, cache, log) "
                   "of pilots ended this long ago (on this host).")
@click.option("--parts-older-than", type=AGE, default="1h", show_default=True,
              help="Remove part files of copies that never finished, this old.")
@click.option("--namespaces/--no-namespaces", default=True, show_default=True,
              help="Trim the event streams of namespaces with no record left (their events are in the history).")
@json_option
@reads
@pass_cli
def gc(cli: CliContext, dry_run: bool, runs_older_than: float, with_data: bool, sandboxes_older_than: float,
       parts_older_than: float, namespaces: bool) -> None:
    """Clean up: DataUnits whose replicas are gone, finished runs, old sandboxes and pilot caches,
    part files of copies that never finished, empty namespaces. Start with --dry-run."""
    from pilotdata import cleanup
    from pilotdata.config import data_dir

    session = cli.session()
    coord = session.coord
    ins = cli.inspector()
    plan = cleanup.plan_gone_replicas(coord)
    plan += cleanup.plan_runs(coord, ins.runs(), runs_older_than, data=with_data,
                              cu_ids=lambda run: ins.cu_ids(CUFilter(run=run)))
    plan += cleanup.plan_pilot_files(coord, sandboxes_older_than, pilots_dir=data_dir() / "pilots",
                                     ended_cus=ins.ended_cu_ids)
    plan += cleanup.plan_part_files(coord, parts_older_than)
    if namespaces:
        plan += cleanup.plan_empty_namespaces(coord, cli.history(), session.agent_environment()["PDATA_URL"])
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    for item in plan:
        if not dry_run:
            try:
                item.apply()
            except (PilotDataError, OSError) as exc:
                failed.append(f"{item.what} {item.target}: {exc}")
                warn(f"could not remove {item.what} {item.target}: {exc}")
                continue
        done.append(item.as_dict())
    freed = sum(int(d["bytes"] or 0) for d in done)
    data = {"dry_run": dry_run, "removed" if not dry_run else "would_remove": done, "bytes": freed,
            "failed": failed}

    def human() -> None:
        table(["WHAT", "WHICH", "WHY", "SIZE"], [[d["what"], d["target"], d["reason"],
                                                  human_size(d["bytes"]) if d["bytes"] else "-"] for d in done],
              empty="(nothing to clean up)")
        if done:
            verb = "would free" if dry_run else "freed"
            click.echo(f"\n{len(done)} item(s); {verb} {human_size(freed)} on this host and in the stores"
                       + (" (dry run: nothing was changed)" if dry_run else ""))

    emit(cli, data, human)


COMMANDS = [gc]
"""The clean-up command."""
