"""``pdata``: the pilot-data command line (click). Entry point :func:`main` (``pdata = "pilotdata.cli:main"``).

Command groups live in small modules: :mod:`.data` (stores and DataUnits), :mod:`.compute` (pilots,
submitting and waiting), :mod:`.status` (the live view), :mod:`.units` (``cu ls|show``), :mod:`.runs`
(runs and resubmission), :mod:`.report` (history, the report and trace), :mod:`.gc` (clean-up),
:mod:`.dashboard` (the web dashboard), :mod:`.config` (settings). The queries behind them are
:mod:`pilotdata.inspect`. Shared options are defined once in :mod:`.options`; printing is :mod:`.output`.

Errors: every failure is reported as ONE line on stderr (``Error: ...``) naming the field, id or URL at
fault, and the exit status says what kind it was (:data:`~.options.EXIT_USAGE` 2 for bad usage or bad
input, :data:`~.options.EXIT_FAILURE` 1 when the work failed). ``--debug`` adds the traceback. Secrets
(the configured URLs' passwords, the stores' keys, anything that looks like a credential) are scrubbed
from the line and the traceback before they are printed, and from every log record (:mod:`pilotdata.redaction`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pilotdata import __version__
from pilotdata.cli import compute, config, dashboard, data, gc, report, runs, status, units
from pilotdata.cli.options import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliContext, configure, global_options
from pilotdata.errors import AlreadyExistsError, NotFoundError, PilotDataError
from pilotdata.redaction import install_log_filter, scrub

__all__ = ["cli", "exit_code_for", "main"]


def exit_code_for(exc: BaseException) -> int:
    """2 for bad usage / bad input (nothing was changed), 1 for a failure of the work or of a server."""
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, (NotFoundError, AlreadyExistsError, ValueError)):
        return EXIT_USAGE  # DescriptionError, UnknownSchemeError, UnsafePathError, bad store URL, ...
    return EXIT_FAILURE


_NO_ARGS_IS_HELP: tuple[type[click.ClickException], ...] = tuple(
    cls for cls in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if cls is not None)  # click >= 8.2


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class PdataGroup(click.Group):
    """The top-level group: runs a command and turns every error into one line and an exit status."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run ``pdata`` with ``args``; exit (or, with ``standalone_mode=False``, return) the status."""
        state = extra.pop("obj", None) or CliContext()
        try:
            rv = super().main(args, prog_name or "pdata", complete_var, standalone_mode=False, obj=state, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else EXIT_OK
        except click.exceptions.Abort:
            click.echo("Error: aborted", err=True)
            code = EXIT_FAILURE
        except _NO_ARGS_IS_HELP as exc:  # ``pdata`` / ``pdata pilot`` alone: the help, as click shows it
            click.echo(exc.format_message(), err=True)
            code = exc.exit_code
        except click.ClickException as exc:
            code = self._report(exc, state, self._usage_message(exc))
        except PilotDataError as exc:
            code = self._report(exc, state, str(exc))
        except OSError as exc:  # a local file the command reads or writes (report --out, logs, get DEST)
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            code = self._report(exc, state, f"{exc.strerror or exc}{where}")
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            code = 130
        except Exception as exc:  # a bug: still one line, the traceback with --debug
            self._report(exc, state, f"internal error: {type(exc).__name__}: {exc}"
                         + ("" if state.debug else " (run with --debug for the traceback)"))
            code = EXIT_FAILURE
        if standalone_mode:
            sys.exit(code)
        return code

    @staticmethod
    def _usage_message(exc: click.ClickException) -> str:
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            message += f" (see '{ctx.command_path} --help')"
        return message

    @staticmethod
    def _report(exc: BaseException, state: CliContext, message: str) -> int:
        secrets = state.secrets()
        if state.debug:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            click.echo(scrub(trace, secrets), err=True, nl=False)
        click.echo(f"Error: {scrub(_one_line(message), secrets)}", err=True)
        return exit_code_for(exc)


@click.group(cls=PdataGroup, name="pdata", context_settings={"help_option_names": ["-h", "--help"],
                                                             "max_content_width": 100})
@global_options
@click.version_option(__version__, "--version", prog_name="pdata", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, namespace: str | None, history_url: str | None,
        config_file: Path | None, progress: bool | None) -> None:
    """pilot-data: put data in stores, start pilots, run ComputeUnits where their data is.

    Settings: flags, then PDATA_URL / PDATA_NAMESPACE / PDATA_HISTORY_URL, then the config file,
    then the embedded SQLite default (no server needed).

    Exit status: 0 ok, 1 the work failed (a CU failed, a replica is bad, a server failed),
    2 bad usage or bad input (nothing was changed).

    Shell completion (bash): eval "$(_PDATA_COMPLETE=bash_source pdata)"
    """
    state = configure(ctx, url, namespace, history_url, config_file, progress)
    logging.basicConfig(level=logging.DEBUG if state.debug else logging.WARNING,
                        format="pdata: %(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    install_log_filter()  # libraries' records too: botocore's DEBUG request logs name the S3 key id


cli.add_command(data.store_group)
for _cmd in data.COMMANDS:
    cli.add_command(_cmd)
cli.add_command(compute.pilot_group)
for _cmd in compute.COMMANDS:
    cli.add_command(_cmd)
for _module in (status, units, runs, report, gc, dashboard):
    for _cmd in _module.COMMANDS:
        cli.add_command(_cmd)
cli.add_command(config.config_group)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: run ``pdata`` with ``argv`` (default: the process arguments), return the status."""
    return int(cli.main(argv, prog_name="pdata", standalone_mode=False))
