"""``pdata dashboard``: serve the live web dashboard (:mod:`pilotdata.dashboard`) until Ctrl-C.

Prints the page's URL, with its random access token, on stdout (one line), and what it serves on
stderr. The server needs the optional extra ``dashboard`` (Starlette and uvicorn); without it the
command fails with the install hint. The refresh thread reconciles pilots with their launchers, as
``pdata status`` does, so a lost pilot's work is handed back while the page is open.
"""

from __future__ import annotations

import ipaddress
import sys

import click

from pilotdata.cli.options import CliContext, pass_cli, reads, run_option
from pilotdata.errors import MissingDependencyError
from pilotdata.redaction import redact_url


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@click.option("--bind", "address", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on: one IP address (or a name, its first address). Anything but "
                   "loopback lets other hosts reach the page: prefer an SSH port forward.")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port (0 picks a free one).")
@run_option("Show this run first  [default: follow the current run]")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes of the history and the page.")
@reads
@pass_cli
def dashboard(cli: CliContext, address: str, port: int, run_ref: str | None, interval: float) -> None:
    """Serve a live web page: what runs where, what failed and why, what moved.

    Panels: pilots (state, site, slots busy and idle, walltime left), ComputeUnits by state and
    throughput, bytes moved and not moved per pilot and site, transfers in flight, failures by reason
    (each CU's details and stderr), and a paged, filterable table of ComputeUnits.

    The URL printed on stdout carries a random access token: every page, asset and API request needs
    it (403 otherwise). It listens on 127.0.0.1 only, unless --bind says otherwise; from another machine,
    forward the port over SSH (ssh -L 8765:127.0.0.1:8765 HOST) and open the same URL there. Stop it
    with Ctrl-C. Needs the optional extra: pip install 'pilot-data[dashboard]'.
    """
    from pilotdata.dashboard.server import INSTALL_HINT

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"pdata dashboard needs Starlette and uvicorn ({exc.name} is missing): "
                                     f"{INSTALL_HINT}") from exc
    from pilotdata.cli.status import refresh_pilots
    from pilotdata.dashboard.app import Dashboard, create_app
    from pilotdata.dashboard.live import LiveState
    from pilotdata.dashboard.server import BindError, bind, new_token, serve
    from pilotdata.inspect import Inspector
    from pilotdata.services import PilotComputeService

    run = cli.run(run_ref) if run_ref else None  # an unknown run fails now
    try:
        listener = bind(address, port)
    except BindError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from None
    session = cli.session()
    # the page reports an outage at its next refresh and keeps refreshing until the backend is back:
    # riding it out for PDATA_RECONNECT seconds inside one refresh would leave the page silently stale
    session.coord.patience = min(session.coord.patience, max(1.0, interval))
    pcs: PilotComputeService | None = None
    state: LiveState | None = None
    try:
        pcs = PilotComputeService(session=session)

        def reconcile() -> None:  # as pdata status does: lost pilots found, their work handed back
            refresh_pilots(session, pcs)

        inspector = Inspector(session.coord, cli.history())
        state = LiveState(inspector, interval=interval, reconcile=reconcile, secrets=cli.secrets())
        board = Dashboard(state, coordination=redact_url(session.url), namespace=session.namespace,
                          history=cli.history().url, fixed_run=run.id if run else None)
        token = new_token()
        app = create_app(board, token)
        state.start()
        click.echo(listener.url(token))
        sys.stdout.flush()
        where = "" if _loopback(listener.host) else (
            f"; warning: {listener.host} is not a loopback address: other hosts can reach the page (plain HTTP, "
            "the token is its only protection)")
        click.echo(f"pdata dashboard: namespace {session.namespace} of {redact_url(session.url)}, refreshed every "
                   f"{interval:g} s; serving on {listener.host} port {listener.port}{where} (Ctrl-C to stop)",
                   err=True)
        serve(app, listener)
    finally:
        listener.sock.close()
        if state is not None:
            state.stop()
        if pcs is not None:
            pcs.close()


COMMANDS = [dashboard]
"""The dashboard command."""
