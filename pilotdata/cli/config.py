"""``pdata config show|path``: the effective settings and where each comes from (see :mod:`.settings`)."""

from __future__ import annotations

import click

from pilotdata.cli.options import CliContext, json_option, pass_cli
from pilotdata.cli.output import emit
from pilotdata.redaction import redact_url


@click.group("config")
def config_group() -> None:
    """Show where settings come from (flags, environment, config file, defaults)."""


@config_group.command("path")
@pass_cli
def config_path_cmd(cli: CliContext) -> None:
    """Print the configuration file in use (it may not exist)."""
    click.echo(str(cli.config_file))


@config_group.command("show")
@json_option
@pass_cli
def config_show(cli: CliContext) -> None:
    """Print the effective settings and where each comes from (passwords hidden)."""
    settings = cli.effective_settings()
    data = {k: {"value": redact_url(v), "source": s} for k, (v, s) in settings.items()}
    data["config_file"] = {"value": str(cli.config_file),
                           "source": "exists" if cli.config_file.exists() else "absent"}

    def human() -> None:
        width = max(len(k) for k in data)
        for key, entry in data.items():
            click.echo(f"{key:<{width}}  {entry['value']}  ({entry['source']})")

    emit(cli, data, human)
