#!/usr/bin/env python3
"""The BLAST-like example: one shared database DataUnit, one ComputeUnit per query chunk.

Run it with ``scripts/blast`` (installs what is missing first) or ``python3 examples/blast/run.py``.
It builds or reuses a synthetic nucleotide database with planted matches, starts local pilots at two
labelled sites, searches every query chunk with NCBI BLAST+ (or the bundled k-mer engine), merges
the hits and prints what ran where, what moved, what the pilot cache saved and whether every planted
match was found. Exit status 0 when all ComputeUnits are Done and all planted matches are found.
See docs/blast.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as a script: make the repository importable (examples.blast, pilotdata)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.blast import data, report
from examples.blast.workflow import Config, WorkflowError, run_workflow
from pilotdata.errors import PilotDataError


def _size(text: str) -> int:
    try:
        return data.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line (``run.py --help``)."""
    defaults = Config()
    p = argparse.ArgumentParser(
        prog="scripts/blast",
        description="BLAST-like search on pilot-data: a shared database DataUnit, one ComputeUnit per "
                    "query chunk, local pilots at two labelled sites (site-a, site-b).",
        epilog="Real use: --db-size 2GB --chunks 500 (and pilots on SLURM/SSH, see docs/blast.md).")
    p.add_argument("--engine", choices=("auto", "blast", "kmer"), default=defaults.engine,
                   help="search engine: NCBI BLAST+ (blastn -task megablast) or the bundled pure-Python k-mer "
                        "search; auto = BLAST+ when installed (default)")
    p.add_argument("--db-size", type=_size, default=defaults.db_size, metavar="SIZE",
                   help="database size, e.g. 5MB, 200MB, 2GB (default 200MB; cached by size+seed)")
    p.add_argument("--queries", type=_positive, default=defaults.queries, metavar="N",
                   help=f"number of 500-base queries (default {defaults.queries}; 1 in 8 is planted)")
    p.add_argument("--chunks", type=_positive, default=defaults.chunks, metavar="N",
                   help=f"query chunks = ComputeUnits (default {defaults.chunks})")
    p.add_argument("--pilots", type=_positive, default=defaults.pilots, metavar="N",
                   help=f"pilots, alternating between site-a and site-b (default {defaults.pilots})")
    p.add_argument("--cores", type=_positive, default=defaults.cores, metavar="N",
                   help=f"slots per pilot (default {defaults.cores})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"generator seed (default {defaults.seed})")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="run directory (default <data dir>/blast-runs/run-<time>); results/ stays there")
    p.add_argument("--keep", action="store_true",
                   help="keep the PilotData stores, pilot sandboxes and chunks after the run")
    p.add_argument("--url", default=None, metavar="URL",
                   help="coordination URL, e.g. redis://127.0.0.1:6379/0 (default: embedded SQLite, no server)")
    p.add_argument("--resource", default=defaults.resource, metavar="URL",
                   help="where pilots run (default fork://localhost; e.g. slurm://localhost)")
    p.add_argument("--python", default=defaults.python, metavar="PATH",
                   help="Python the ComputeUnits run task.py with (default: this interpreter)")
    p.add_argument("--timeout", type=float, default=defaults.timeout, metavar="SECONDS",
                   help=f"give up waiting after this long (default {defaults.timeout:.0f})")
    p.add_argument("-v", "--verbose", action="store_true", help="log what pilot-data does")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; 0 when every CU is Done and every planted match found, 1 otherwise, 2 on errors."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = Config(db_size=args.db_size, chunks=args.chunks, pilots=args.pilots, cores=args.cores, seed=args.seed,
                 queries=args.queries, engine=args.engine, workdir=args.workdir, keep=args.keep, url=args.url,
                 resource=args.resource, python=args.python, timeout=args.timeout)
    try:
        outcome = run_workflow(cfg, say=lambda text: print(text, flush=True))
    except (WorkflowError, PilotDataError, ValueError, OSError) as exc:
        print(f"blast example: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blast example: interrupted; pilots cancelled", file=sys.stderr)
        return 130
    print("\n".join(report.summary_lines(outcome)))
    results = outcome.run_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(report.summary_json(outcome) + "\n", encoding="utf-8")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
