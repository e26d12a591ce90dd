"""The shared options of ``pdata`` (defined once, here), the per-invocation context, and parameter types.

:func:`global_options` puts ``--url``, ``--namespace``, ``--history-url``, ``--config``, ``--json`` and
``--debug`` on the top-level group; :func:`json_option` lets every listing/show command take ``--json``
after its name too (``pdata pilot ls --json`` = ``pdata --json pilot ls``). :class:`CliContext` carries
the resolved settings and opens the :class:`~pilotdata.session.Session` on first use.

Exit codes (documented in ``docs/cli.md``): :data:`EXIT_OK` 0, :data:`EXIT_FAILURE` 1 (the work failed:
a CU failed, a replica is bad, a transfer or a server failed), :data:`EXIT_USAGE` 2 (bad usage or bad
input: unknown option or id, bad URL, missing file, malformed ``k=v``; nothing was changed).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from pilotdata.cli.settings import config_path, load_config
from pilotdata.errors import PilotDataError
from pilotdata.redaction import url_secrets

if TYPE_CHECKING:
    from pilotdata.history import History
    from pilotdata.inspect import Inspector
    from pilotdata.runs import Run
    from pilotdata.session import Session

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])

_SETTINGS = ("url", "namespace", "history_url", "checksum")


@dataclass
class CliContext:
    """Resolved settings of one ``pdata`` invocation; opens the session lazily and closes it at the end."""

    url: str | None = None
    namespace: str | None = None
    history_url: str | None = None
    checksum: str | None = None
    """Checksum algorithm of files added (``--checksum``, ``PDATA_CHECKSUM``, config ``checksum``); None: the
    library's default (blake3 where installed, else sha256)."""
    json: bool = False
    debug: bool = False
    progress: bool | None = None
    """Progress bars: ``None`` shows them when stderr is a terminal (and ``--json`` is off)."""
    config_file: Path = field(default_factory=config_path)
    sources: dict[str, str] = field(default_factory=dict)
    """Setting -> where it came from: ``flag``, ``environment``, ``config file`` or ``default``."""
    _session: Session | None = None
    _history: History | None = None
    _inspector: Inspector | None = None

    def session(self) -> Session:
        """The session for these settings (opened once)."""
        if self._session is None:
            from pilotdata.session import Session

            self._session = Session(self.url, namespace=self.namespace, history_url=self.history_url)
        return self._session

    def history(self) -> History:
        """The history database of the session (opened once)."""
        if self._history is None:
            from pilotdata.history import History

            self._history = History(self.session().history_url)
        return self._history

    def inspector(self, *, refresh: bool = True) -> Inspector:
        """The query layer over this session and history, drained first (``refresh``) so it is current."""
        if self._inspector is None:
            from pilotdata.inspect import Inspector

            self._inspector = Inspector(self.session().coord, self.history())
        if refresh:
            self._inspector.refresh()
        return self._inspector

    def run(self, ref: str | None, *, required: bool = False) -> Run | None:
        """The run ``ref`` names, else ``PDATA_RUN``'s, else the current run (``None`` if there is none).

        An unknown run is a usage error naming it; ``required`` makes "no run yet" one too.
        """
        from pilotdata.errors import NotFoundError
        from pilotdata.runs import Run, resolve_run

        try:
            run = resolve_run(self.session().coord, ref)
        except NotFoundError as exc:
            try:  # a run whose records 'pdata gc' (or its workflow) removed: the history still knows it
                known = self.inspector().run(str(ref or os.environ.get("PDATA_RUN")))
            except NotFoundError:
                raise click.BadParameter(str(exc), param_hint="RUN") from None
            return Run(known.id, known.origin or "", known.created, known.closed or known.created, parent=known.parent)
        if run is None and required:
            raise click.UsageError("no run yet in this namespace: submit something first (pdata submit)")
        return run

    def check_home(self) -> None:
        """Refuse to read from a ``PDATA_HOME`` that does not exist (a typo would read an empty, new
        database): a usage error naming the path. Commands that record something create it instead."""
        home = os.environ.get("PDATA_HOME")
        if not home or self.url:  # an explicit coordination URL does not read from PDATA_HOME
            return
        path = Path(home).expanduser()
        if not path.is_dir():
            raise click.UsageError(f"PDATA_HOME {str(path)!r} does not exist: there is nothing to read there "
                                   "(is the path right? commands that record something, such as 'pdata store add' "
                                   "or 'pdata pilot start', create it)")

    def close(self) -> None:
        """Stop the session's background work and close its connections."""
        self._inspector = None
        if self._history is not None:
            self._history.engine.dispose()
            self._history = None
        if self._session is not None:
            self._session.close()
            self._session = None

    def effective_settings(self) -> dict[str, tuple[str, str]]:
        """``{setting: (value, source)}`` with the built-in defaults filled in (values may hold passwords)."""
        from pilotdata import config
        from pilotdata.data.checksums import default_checksum

        defaults = {"url": config.default_coordination_url, "namespace": config.default_namespace,
                    "history_url": config.default_history_url, "checksum": default_checksum}
        out: dict[str, tuple[str, str]] = {}
        for name in _SETTINGS:
            value = getattr(self, name)
            out[name] = (value, self.sources.get(name, "flag")) if value else (defaults[name](), "default")
        return out

    def checksum_algorithm(self) -> str | None:
        """The checksum setting, checked (a usage error names where it came from); None: the default."""
        from pilotdata.data.checksums import check_checksum
        from pilotdata.errors import DescriptionError

        if self.checksum is None:
            return None
        where = {"flag": "--checksum", "environment": "PDATA_CHECKSUM"}.get(
            self.sources.get("checksum", "flag"), f"checksum in {self.config_file}")
        try:
            return check_checksum(self.checksum, field=where)
        except DescriptionError as exc:
            raise click.UsageError(str(exc)) from None

    def secrets(self) -> list[str]:
        """Passwords inside the configured URLs (scrubbed from any error message before it is shown)."""
        return [secret for url in (self.url, self.history_url) if url for secret in url_secrets(url)]

    def show_progress(self) -> bool:
        """Whether to draw progress bars on stderr."""
        if self.json and self.progress is None:
            return False
        if self.progress is not None:
            return self.progress
        return sys.stderr.isatty()


class WorkFailed(PilotDataError):
    """The command ran but the work it reports on failed (a CU failed, a replica is bad): exit status 1."""


pass_cli = click.make_pass_decorator(CliContext, ensure=True)
"""Decorator passing the invocation's :class:`CliContext` as the first argument."""


def _source_name(source: ParameterSource | None) -> str:
    return {ParameterSource.COMMANDLINE: "flag", ParameterSource.ENVIRONMENT: "environment"}.get(
        source or ParameterSource.DEFAULT, "default")


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliContext).json = True


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliContext).debug = True


def _set_checksum(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:  # where it came from is known once parsing is done (configure)
        ctx.ensure_object(CliContext).checksum = value


def json_option(fn: F) -> F:
    """``--json``: print machine-readable JSON on stdout instead of a table (also accepted before the command)."""
    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_set_json,
                        is_eager=True, help="Print JSON instead of a table.")(fn)


def global_options(fn: F) -> F:
    """The options of the top-level group; they configure the :class:`CliContext` of the invocation."""
    opts = [
        click.option("--url", envvar="PDATA_URL", show_envvar=True, metavar="URL",
                     help="Coordination URL: sqlite:///path (embedded, the default), redis://, rediss://, unix://."),
        click.option("--namespace", envvar="PDATA_NAMESPACE", show_envvar=True, metavar="NAME",
                     help="Coordination namespace (one per project)  [default: default]"),
        click.option("--history-url", envvar="PDATA_HISTORY_URL", show_envvar=True, metavar="URL",
                     help="History database: sqlite:///path (default: beside the embedded file) or postgresql://."),
        click.option("--config", "config_file", envvar="PDATA_CONFIG", show_envvar=True, metavar="FILE",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Configuration file (TOML)  [default: $PDATA_HOME/config.toml or "
                          "~/.config/pilot-data/config.toml]"),
        click.option("--checksum", envvar="PDATA_CHECKSUM", show_envvar=True, metavar="ALGORITHM",
                     expose_value=False, callback=_set_checksum,
                     help="Checksum recorded for files added to DataUnits: blake3, xxh128 or sha256  "
                          "[default: blake3 if installed, else sha256]"),
        click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_set_json,
                     help="Print JSON instead of tables (listing and show commands)."),
        click.option("--progress/--no-progress", default=None,
                     help="Draw progress bars on stderr  [default: when stderr is a terminal]"),
        click.option("--debug", is_flag=True, envvar="PDATA_DEBUG", expose_value=False, callback=_set_debug,
                     is_eager=True, help="Show tracebacks and debug logs."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def configure(ctx: click.Context, url: str | None, namespace: str | None, history_url: str | None,
              config_file: Path | None, progress: bool | None) -> CliContext:
    """Fill the invocation's :class:`CliContext`: flags and environment first, then the config file."""
    cli = ctx.ensure_object(CliContext)
    explicit = config_file is not None
    cli.config_file = config_file if config_file is not None else config_path()
    values = {"url": url, "namespace": namespace, "history_url": history_url, "checksum": cli.checksum}
    for name in _SETTINGS:
        if values[name]:
            cli.sources[name] = _source_name(ctx.get_parameter_source(name))
    if explicit and not cli.config_file.exists():
        raise click.BadParameter(f"{str(cli.config_file)!r} does not exist", param_hint="--config")
    if cli.config_file.exists():
        for name, value in load_config(cli.config_file).items():
            if not values[name]:
                values[name] = value
                cli.sources[name] = "config file"
    cli.url, cli.namespace, cli.history_url = values["url"], values["namespace"], values["history_url"]
    cli.checksum = values["checksum"]
    cli.progress = progress
    ctx.call_on_close(cli.close)
    return cli


# ------------------------------------------------------------------------------------- types
class KeyValue(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """``KEY=VALUE`` (labels, environment, options); the value may be empty, the key may not."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        """Split on the first ``=``; fail naming the option and the value otherwise."""
        if isinstance(value, tuple):
            return value  # already converted (defaults)
        key, sep, val = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key.strip(), val


class Size(click.ParamType):  # type: ignore[type-arg]
    """A size: ``10GB``, ``512MiB``, ``100B``, or a bare number of megabytes (as in BigJob)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Check the spelling now (the description parses it again); return it unchanged."""
        text = str(value).strip()
        if not re.fullmatch(r"(\d+(\.\d*)?|\.\d+)\s*([kKmMgGtTpP]i?[bB]|[bB])?", text):
            self.fail(f"{value!r} is not a size such as 10GB, 512MiB or 100 (megabytes)", param, ctx)
        return text


class Since(click.ParamType):  # type: ignore[type-arg]
    """A point in time: a duration ago (``90s``, ``10m``, ``2h``, ``3d``), an ISO date/time, or epoch seconds."""

    name = "WHEN"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Epoch seconds."""
        if isinstance(value, float):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text)
        if match:
            return time.time() - float(match[1]) * self._UNITS[match[2]]
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number > 10**8:  # epoch seconds
                return number
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            self.fail(f"{value!r} is not a duration (10m, 2h, 3d), an ISO date/time or epoch seconds", param, ctx)


KEY_VALUE = KeyValue()
SIZE = Size()
SINCE = Since()


def json_or_text(text: str) -> Any:
    """An option value: JSON when it parses (numbers, true/false, lists, objects), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def to_dict(pairs: tuple[tuple[str, str], ...], option: str) -> dict[str, str]:
    """``((k, v), ...)`` -> ``{k: v}``; a key given twice with different values is a usage error."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise click.BadParameter(f"{key!r} is given twice ({out[key]!r} and {value!r})", param_hint=option)
        out[key] = value
    return out


def reads(fn: F) -> F:
    """Mark a command that only reads: it refuses a ``PDATA_HOME`` that does not exist (see
    :meth:`CliContext.check_home`) before it opens anything."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        click.get_current_context().find_object(CliContext).check_home()  # type: ignore[union-attr]
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def run_option(help_text: str = "Run  [default: PDATA_RUN, else the current run: the one started last]",
               ) -> Callable[[F], F]:
    """``--run RUN``: which run a command works on."""

    def deco(fn: F) -> F:
        from pilotdata.cli.complete import complete_runs

        return click.option("--run", "run_ref", metavar="RUN", help=help_text, shell_complete=complete_runs)(fn)

    return deco


def labels_option(fn: F) -> F:
    """``--label KEY=VALUE`` (repeatable); ``datacenter`` / ``machine`` are the affinity labels."""
    return click.option("--label", "labels", multiple=True, type=KEY_VALUE,
                        help="Label KEY=VALUE (repeatable); datacenter=... and machine=... set the affinity.")(fn)

