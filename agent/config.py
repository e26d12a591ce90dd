"""Command-line arguments of ``python -m agent`` and the :class:`AgentConfig` they produce.

The coordination URL may carry a password, so it is read from ``PDATA_URL`` by default and never
logged (the agent logs ``coord.url``, which the backend redacts). Policy values (retries, reassign
budget, consecutive-failure limit) come from here: the ComputeDataService passes them on the
command line it builds for the launcher.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pilotdata.redaction import url_secrets

DEFAULT_HEARTBEAT_TTL = 15.0
"""Seconds a heartbeat stays valid; the agent renews it every ``ttl / 3``."""
DEFAULT_MAX_REASSIGN = 3
"""DIANE's *lost task max reassign*: how often a CU may be taken back from a dead/stopping pilot."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run; built by :func:`parse_args`."""

    pilot: str
    url: str | None
    """Coordination URL (may contain a password: never log it). ``None``: the configured default."""
    namespace: str | None
    slots: int | None
    """Slots offered; ``None``: the pilot record's ``slots`` / description, else the CPU count."""
    walltime: float | None
    """Minutes until the agent stops claiming, returns its work and ends Done. ``None``: unlimited."""
    workdir: Path | None
    """Parent of the CU sandboxes and of the pilot cache; ``None``: ``./<pilot id>``."""
    heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL
    max_retries: int = 0
    """DIANE's *failed task max reassign*, used when a CU does not set its own ``max_retries``."""
    max_reassign: int = DEFAULT_MAX_REASSIGN
    max_consecutive_failures: int = 0
    """DIANE's *remove a failing worker*: stop after this many CU failures in a row (0: never)."""
    mpi_launcher: str = "auto"
    """``auto``, ``srun``, or an mpirun-compatible command (``mpirun``, ``/opt/ompi/bin/mpiexec``)."""
    claim_timeout: float = 1.0
    """Longest a blocking claim waits; also the period of the CU state check (cancel detection)."""
    kill_grace: float = 2.0
    """Seconds between SIGTERM and SIGKILL when a CU's process group is stopped."""
    stop_timeout: float = 30.0
    """Longest the agent waits at shutdown for CU workers to hand their work back."""
    input_wait: float = 300.0
    """Longest input staging waits for a DataUnit that is still being uploaded (New/Pending)."""
    log_level: str = "INFO"
    node_launch: str = "auto"
    """How CUs reach the allocation's other nodes: ``auto`` (by batch system), ``off`` (every CU on the
    agent's node), ``srun``, ``ssh``, ``qrsh`` or ``blaunch`` (:mod:`agent.executors`)."""
    node_cache: str | None = None
    """Each node's cache directory, with ``{pilot}``, ``{node}``, ``{tmpdir}``, ``{workdir}``; ``None``:
    :data:`agent.allocation.DEFAULT_NODE_CACHE` on several nodes, ``<workdir>/.cache`` on one."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _pilot_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected an integer >= 1, got 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m agent``."""
    p = argparse.ArgumentParser(
        prog="python -m agent",
        description="pilot-data agent: runs the ComputeUnits of one pilot on this resource.",
    )
    p.add_argument("--pilot", required=True, type=_pilot_id, help="pilot id (its record in coordination)")
    p.add_argument(
        "--url",
        default=None,
        help="coordination URL (default: $PDATA_URL; prefer the variable, a password on the command "
        "line is visible to other users)",
    )
    p.add_argument("--namespace", default=None, help="coordination namespace (default: $PDATA_NAMESPACE)")
    p.add_argument("--slots", type=_positive_int, default=None, help="slots (cores) this pilot offers")
    p.add_argument("--walltime", type=_positive_float, default=None, help="minutes until a clean stop")
    p.add_argument("--workdir", type=Path, default=None, help="directory for sandboxes and the cache")
    p.add_argument("--heartbeat-ttl", type=_positive_float, default=DEFAULT_HEARTBEAT_TTL, help="seconds")
    p.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=0,
        help="failed task max reassign: reruns of a failed CU (unless the CU sets max_retries)",
    )
    p.add_argument(
        "--max-reassign",
        type=_non_negative_int,
        default=DEFAULT_MAX_REASSIGN,
        help="lost task max reassign: requeues of a CU whose pilot died or stopped",
    )
    p.add_argument(
        "--max-consecutive-failures",
        type=_non_negative_int,
        default=0,
        help="remove a failing worker: stop after N CU failures in a row (0: off)",
    )
    p.add_argument(
        "--mpi-launcher",
        default="auto",
        help="auto (srun inside SLURM when it supports pmix, else mpirun), srun, or an mpirun command",
    )
    p.add_argument("--claim-timeout", type=_positive_float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--kill-grace", type=_positive_float, default=2.0, help="seconds from SIGTERM to SIGKILL")
    p.add_argument("--stop-timeout", type=_positive_float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--input-wait",
        type=_positive_float,
        default=300.0,
        help="seconds to wait for an input DataUnit that is still being uploaded",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--node-launch",
        default="auto",
        choices=["auto", "off", "srun", "ssh", "qrsh", "blaunch"],
        help="how CUs reach the other nodes of a multi-node allocation (off: all on this node)",
    )
    p.add_argument(
        "--node-cache",
        default=None,
        help="each node's cache directory; {pilot}, {node}, {tmpdir} and {workdir} are replaced "
        "(default: {tmpdir}/pilot-data-{pilot}/{node} on several nodes, <workdir>/.cache on one)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> AgentConfig:
    """Parse ``argv`` (default ``sys.argv[1:]``) into an :class:`AgentConfig`.

    Exits with status 2 and a usage message on bad arguments (argparse's convention).
    """
    ns = build_parser().parse_args(argv)
    return AgentConfig(
        pilot=ns.pilot,
        url=ns.url or os.environ.get("PDATA_URL") or None,
        namespace=ns.namespace,
        slots=ns.slots,
        walltime=ns.walltime,
        workdir=ns.workdir,
        heartbeat_ttl=ns.heartbeat_ttl,
        max_retries=ns.max_retries,
        max_reassign=ns.max_reassign,
        max_consecutive_failures=ns.max_consecutive_failures,
        mpi_launcher=ns.mpi_launcher,
        claim_timeout=ns.claim_timeout,
        kill_grace=ns.kill_grace,
        stop_timeout=ns.stop_timeout,
        input_wait=ns.input_wait,
        log_level=ns.log_level,
        node_launch=ns.node_launch,
        node_cache=ns.node_cache,
    )


def url_has_password(url: str | None) -> bool:
    """Whether ``url`` carries a password (userinfo or a ``password=`` query parameter)."""
    if not url:
        return False
    return bool(url_secrets(url))
