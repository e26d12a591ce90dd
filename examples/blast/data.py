"""The synthetic workload: a random nucleotide database with planted matches, queries, chunks.

:func:`prepare` builds (or reuses, from a cache directory keyed by size, seed and query count) a
database of random records (``s0000000``, ...) and a set of random queries (``q000000``, ...). Some
queries are *planted*: a stretch of the query, with a few substitutions, is written into a known
database record at a known position, on the plus or the minus strand. :class:`Plant` records where,
and ``planted.tsv`` lists them all, so a search can be checked: every planted match must be found.

Mutations never touch a 64-base window in the middle of a planted stretch, so the exact run a
megablast word (28) or the k-mer engine (word + step - 1 = 35) needs is always there.

Cache layout (``<cache>/db-<size>-s<seed>-q<queries>/``)::

    fasta/blastdb/db.fasta       the database (the k-mer engine's DataUnit: this directory)
    blast/blastdb/db.fasta, db.n*  the same FASTA (hard link) plus makeblastdb's files (BLAST's DataUnit)
    queries.fasta  planted.tsv   the queries and the truth
    ready.json  blast.done       written last: the entry (its BLAST database) is complete
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .hits import Hit, read_fasta
from .kmer import reverse_complement

RECORD_LENGTH = 10_000
QUERY_LENGTH = 500
PLANT_MIN, PLANT_MAX = 200, 320
SAFE_WINDOW = 64
"""Bases in the middle of a planted stretch that are never mutated."""
MUTATION_SPACING = 40
"""About one substitution per this many planted bases."""
DB_DIR = "blastdb"
DB_NAME = "db"
_TABLE = bytes(b"ACGT"[i & 3] for i in range(256))
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from ``'200MB'``, ``'2GB'``, ``'1.5GiB'`` or a plain integer; :class:`ValueError` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", text)
    if not match or match[2].lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 200MB, 2GB, 512MiB)")
    value = int(float(match[1]) * _UNITS[match[2].lower()])
    if value < 1:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def format_size(nbytes: float) -> str:
    """``1.2 GB``, ``340.0 MB``, ``12 B``: human-readable, decimal units."""
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= factor:
            return f"{nbytes / factor:.1f} {unit}"
    return f"{int(nbytes)} B"


@dataclass(frozen=True)
class Plant:
    """A query stretch written (mutated) into a database record: the match a search must find.

    Coordinates are 1-based and inclusive, as BLAST reports them; ``sstart > send`` on the minus strand.
    """

    query: str
    subject: str
    qstart: int
    qend: int
    sstart: int
    send: int
    mutations: int

    @property
    def strand(self) -> str:
        """``plus`` or ``minus``."""
        return "minus" if self.sstart > self.send else "plus"

    def found_by(self, hit: Hit, min_overlap: float = 0.5) -> bool:
        """Whether ``hit`` is this match: same query, subject and strand, overlapping at least half of it."""
        if hit.qseqid != self.query or hit.sseqid != self.subject or hit.strand != self.strand:
            return False
        lo, hi = sorted((self.sstart, self.send))
        hlo, hhi = sorted((hit.sstart, hit.send))
        return min(hi, hhi) - max(lo, hlo) + 1 >= min_overlap * (hi - lo + 1)


PLANT_COLUMNS = ("query", "subject", "qstart", "qend", "sstart", "send", "mutations")


def write_plants(path: Path, plants: Sequence[Plant]) -> None:
    """Write the truth table (tab-separated, with a ``#`` header)."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("# " + "\t".join(PLANT_COLUMNS) + "\n")
        for p in plants:
            out.write("\t".join(str(getattr(p, c)) for c in PLANT_COLUMNS) + "\n")


def read_plants(path: Path) -> list[Plant]:
    """Read a truth table written by :func:`write_plants`."""
    plants = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        q, s, qs, qe, ss, se, m = line.split("\t")
        plants.append(Plant(q, s, int(qs), int(qe), int(ss), int(se), int(m)))
    return plants


@dataclass(frozen=True)
class Workload:
    """A prepared (cached) workload: where its files are and what was planted."""

    root: Path
    db_size: int
    seed: int
    records: int
    queries: int
    plants: list[Plant]
    has_blast_db: bool
    build_seconds: float
    reused: bool

    @property
    def fasta_dir(self) -> Path:
        """The DB directory for the k-mer engine (holds ``blastdb/db.fasta``)."""
        return self.root / "fasta" / DB_DIR

    @property
    def blast_dir(self) -> Path:
        """The DB directory for BLAST+ (``blastdb/`` with the FASTA and makeblastdb's files)."""
        return self.root / "blast" / DB_DIR

    @property
    def queries_fasta(self) -> Path:
        """All queries, one FASTA file."""
        return self.root / "queries.fasta"

    @property
    def planted_tsv(self) -> Path:
        """The truth table."""
        return self.root / "planted.tsv"

    def db_dir(self, engine: str) -> Path:
        """The directory to ship as the database DataUnit for ``engine`` (``blast`` or ``kmer``)."""
        return self.blast_dir if engine == "blast" else self.fasta_dir


def _random_dna(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).translate(_TABLE)


def _mutate(rng: random.Random, seq: bytes) -> tuple[bytes, int]:
    """Substitute about one base in :data:`MUTATION_SPACING`, never inside the middle safe window."""
    out = bytearray(seq)
    safe_lo = len(seq) // 2 - SAFE_WINDOW // 2
    allowed = [i for i in range(len(seq)) if not safe_lo <= i < safe_lo + SAFE_WINDOW]
    positions = rng.sample(allowed, max(1, len(seq) // MUTATION_SPACING))
    for i in positions:
        out[i] = rng.choice([b for b in b"ACGT" if b != out[i]])
    return bytes(out), len(positions)


def cache_key(db_size: int, seed: int, queries: int) -> str:
    """The cache directory name of a workload."""
    return f"db-{db_size}-s{seed}-q{queries}"


def prepare(cache: Path, db_size: int, seed: int = 42, queries: int = 400, *, plants: int | None = None,
            makeblastdb: str | None = None) -> Workload:
    """Build the workload under ``cache`` or reuse the cached one; add BLAST's files if ``makeblastdb``.

    ``makeblastdb`` is the path of NCBI's program (``None``: no BLAST database). ``plants`` defaults to
    one query in eight (at least 4, at most one per database record).
    """
    if queries < 1:
        raise ValueError(f"queries must be >= 1 (got {queries})")
    root = cache / cache_key(db_size, seed, queries)
    ready = root / "ready.json"
    started = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{root.name}.lock", "w") as lock:  # two runs never build one entry at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        reused = ready.exists()
        if not reused:
            if root.exists():
                shutil.rmtree(root)  # an interrupted build
            meta = _generate(root, db_size, seed, queries, plants)
            ready.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        meta = json.loads(ready.read_text(encoding="utf-8"))
        has_blast = (root / "blast.done").exists()
        if makeblastdb and not has_blast:
            _make_blast_db(root, makeblastdb)
            has_blast = True
    return Workload(root, db_size, seed, int(meta["records"]), queries, read_plants(root / "planted.tsv"),
                    has_blast, time.monotonic() - started, reused)


def _generate(root: Path, db_size: int, seed: int, queries: int, plants: int | None) -> dict[str, object]:
    rng = random.Random(seed)
    fasta_dir = root / "fasta" / DB_DIR
    fasta_dir.mkdir(parents=True)
    lengths = [RECORD_LENGTH] * (db_size // RECORD_LENGTH)
    if db_size % RECORD_LENGTH:
        lengths.append(db_size % RECORD_LENGTH)
    query_seqs = [_random_dna(rng, QUERY_LENGTH) for _ in range(queries)]
    query_ids = [f"q{i:06d}" for i in range(queries)]
    eligible = [i for i, n in enumerate(lengths) if n >= PLANT_MAX]
    wanted = plants if plants is not None else max(4, queries // 8)
    count = min(wanted, queries, len(eligible))
    if count < 1:
        raise ValueError(f"database of {db_size} bytes is too small to plant a match (needs {PLANT_MAX})")
    by_record: dict[int, tuple[bytes, Plant]] = {}
    for qi, ri in zip(sorted(rng.sample(range(queries), count)), rng.sample(eligible, count)):
        length = rng.randint(PLANT_MIN, PLANT_MAX)
        q0 = rng.randrange(0, QUERY_LENGTH - length + 1)
        stretch, mutations = _mutate(rng, query_seqs[qi][q0:q0 + length])
        s0 = rng.randrange(0, lengths[ri] - length + 1)
        minus = rng.random() < 0.5
        if minus:
            stretch = reverse_complement(stretch)
        sstart, send = (s0 + length, s0 + 1) if minus else (s0 + 1, s0 + length)
        plant = Plant(query_ids[qi], f"s{ri:07d}", q0 + 1, q0 + length, sstart, send, mutations)
        by_record[ri] = (stretch, plant)
    with open(fasta_dir / f"{DB_NAME}.fasta", "wb") as out:
        for ri, n in enumerate(lengths):
            seq = _random_dna(rng, n)
            if ri in by_record:
                stretch, plant = by_record[ri]
                s0 = min(plant.sstart, plant.send) - 1
                seq = seq[:s0] + stretch + seq[s0 + len(stretch):]
            out.write(b">s%07d\n%s\n" % (ri, seq))
    with open(root / "queries.fasta", "wb") as out:
        for qid, seq in zip(query_ids, query_seqs):
            out.write(b">%s\n%s\n" % (qid.encode(), seq))
    truth = sorted((p for _, p in by_record.values()), key=lambda p: p.query)
    write_plants(root / "planted.tsv", truth)
    return {"db_size": db_size, "seed": seed, "queries": queries, "records": len(lengths),
            "plants": len(truth), "created": time.time()}


def _make_blast_db(root: Path, makeblastdb: str) -> None:
    """Run ``makeblastdb`` once into ``blast/blastdb/`` next to a hard link of the FASTA."""
    blast_dir = root / "blast" / DB_DIR
    if blast_dir.exists():
        shutil.rmtree(blast_dir)  # an interrupted build
    blast_dir.mkdir(parents=True)
    fasta = blast_dir / f"{DB_NAME}.fasta"
    try:
        os.link(root / "fasta" / DB_DIR / f"{DB_NAME}.fasta", fasta)
    except OSError:
        shutil.copyfile(root / "fasta" / DB_DIR / f"{DB_NAME}.fasta", fasta)
    cmd = [makeblastdb, "-in", fasta.name, "-dbtype", "nucl", "-out", DB_NAME, "-parse_seqids",
           "-title", f"pilot-data synthetic {root.name}"]
    proc = subprocess.run(cmd, cwd=blast_dir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"makeblastdb failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    (root / "blast.done").write_text("ok\n", encoding="utf-8")  # outside the shipped directory


def split_queries(queries_fasta: Path, chunks: int, out_dir: Path) -> list[Path]:
    """Split the queries into ``chunks`` FASTA files (round-robin by record; fewer if fewer queries)."""
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1 (got {chunks})")
    records = list(read_fasta(queries_fasta))
    n = min(chunks, len(records))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"chunk-{i:04d}.fasta" for i in range(n)]
    groups: list[list[tuple[str, bytes]]] = [[] for _ in range(n)]
    for i, record in enumerate(records):
        groups[i % n].append(record)
    for path, group in zip(paths, groups):
        with open(path, "wb") as out:
            for qid, seq in group:
                out.write(b">%s\n%s\n" % (qid.encode(), seq))
    return paths
