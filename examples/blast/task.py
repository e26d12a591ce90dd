"""The per-chunk program a ComputeUnit runs: search one query chunk against the database.

    python3 task.py --db DIR --queries FILE --out FILE [--engine auto|blast|kmer] [--threads N]

``DIR`` holds ``db.fasta`` and, for BLAST+, makeblastdb's ``db.n*`` files (the database DataUnit
linked into the sandbox). ``--engine blast`` runs ``blastn -task megablast``; ``kmer`` the bundled
pure-Python engine; ``auto`` BLAST+ when ``blastn`` is on ``PATH`` and the BLAST files are there.
Either way ``FILE`` gets the 12 ``-outfmt 6`` columns after a ``# engine: ...`` line.

Exit codes: 0 done, 2 bad arguments or inputs (missing files, BLAST+ asked for but absent), 3 the
search program failed. Standard library only: it travels to the pilots in the task-code DataUnit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as a script: import the modules beside it (not beside a symlink's target)
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))

try:
    from . import hits as hitsfmt
    from . import kmer
except ImportError:
    import hits as hitsfmt  # type: ignore[no-redef, import-not-found]
    import kmer  # type: ignore[no-redef, import-not-found]

DB_NAME = "db"
EVALUE = 1e-5


class TaskError(Exception):
    """A problem with the task's arguments or inputs (exit 2) or with the search program (exit 3)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def has_blast_db(db: Path) -> bool:
    """Whether ``db`` holds a BLAST+ nucleotide database named ``db``."""
    return (db / f"{DB_NAME}.nsq").exists() or (db / f"{DB_NAME}.nal").exists()


def choose_engine(requested: str, db: Path) -> str:
    """``blast`` or ``kmer`` for ``requested`` (``auto``: BLAST+ if installed and its files are there)."""
    if requested == "auto":
        return "blast" if shutil.which("blastn") and has_blast_db(db) else "kmer"
    if requested == "blast":
        if not shutil.which("blastn"):
            raise TaskError("--engine blast: blastn is not on PATH (install ncbi-blast+, or use --engine kmer)")
        if not has_blast_db(db):
            raise TaskError(f"--engine blast: {db} has no BLAST database {DB_NAME}.n* (run makeblastdb)")
    return requested


def blast_version() -> str:
    """``blastn 2.12.0+`` (or ``blastn`` if it does not say)."""
    proc = subprocess.run(["blastn", "-version"], capture_output=True, text=True, check=False)
    first = proc.stdout.splitlines()[0] if proc.stdout else "blastn"
    return first.replace(":", "").strip()


def run_blast(db: Path, queries: Path, out: Path, threads: int = 1) -> int:
    """``blastn -task megablast`` into ``out`` (after the engine line); return the number of hits."""
    raw = out.with_name(out.name + ".blast")
    cmd = ["blastn", "-task", "megablast", "-query", str(queries), "-db", str(db / DB_NAME),
           "-out", str(raw), "-outfmt", "6", "-evalue", str(EVALUE), "-num_threads", str(threads),
           "-max_target_seqs", "50"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TaskError(f"blastn failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}", exit_code=3)
    found, _ = hitsfmt.read_hits(raw)
    raw.unlink()
    engine = f"blast ({blast_version()}, -task megablast, evalue {EVALUE:g})"
    return hitsfmt.write_hits(out, found, engine=engine)


def run_kmer(db: Path, queries: Path, out: Path) -> int:
    """The bundled k-mer engine into ``out``; return the number of hits."""
    params = kmer.Params(evalue=EVALUE)
    found = kmer.search(list(hitsfmt.read_fasta(queries)), db / f"{DB_NAME}.fasta", params)
    return hitsfmt.write_hits(out, found, engine=f"kmer ({params.describe()})")


def run(db: Path, queries: Path, out: Path, engine: str = "auto", threads: int = 1) -> tuple[str, int]:
    """Search ``queries`` against ``db`` into ``out``; return ``(engine used, hits)``."""
    if not db.is_dir():
        raise TaskError(f"--db: {db} is not a directory")
    if not queries.is_file():
        raise TaskError(f"--queries: {queries} does not exist")
    chosen = choose_engine(engine, db)
    if chosen == "kmer" and not (db / f"{DB_NAME}.fasta").is_file():
        raise TaskError(f"--db: {db} has no {DB_NAME}.fasta for the k-mer engine")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = run_blast(db, queries, out, threads) if chosen == "blast" else run_kmer(db, queries, out)
    return chosen, count


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="task.py", description="Search one query chunk against the database.")
    parser.add_argument("--db", required=True, type=Path, help="database directory (db.fasta, db.n*)")
    parser.add_argument("--queries", required=True, type=Path, help="query FASTA file")
    parser.add_argument("--out", required=True, type=Path, help="hits file to write (outfmt 6 columns)")
    parser.add_argument("--engine", choices=("auto", "blast", "kmer"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="blastn -num_threads (default 1)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        engine, count = run(args.db, args.queries, args.out, args.engine, args.threads)
    except TaskError as exc:
        print(f"task.py: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:
        print(f"task.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"engine {engine}: {count} hits in {time.monotonic() - started:.2f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
