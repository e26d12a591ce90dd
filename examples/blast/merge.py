"""Merging the per-chunk hits files and checking them against the planted matches.

:func:`merge` reads every ``hits-*.tsv`` of a directory (an exported output DataUnit), writes one
sorted ``hits.tsv`` and says which engines wrote them; :func:`check_planted` tells which planted
matches the hits contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data import Plant
from .hits import Hit, read_hits, write_hits


@dataclass
class Merged:
    """The result of :func:`merge`."""

    path: Path
    hits: list[Hit]
    files: int
    engines: dict[str, int] = field(default_factory=dict)
    """Engine name (``blast`` / ``kmer``) -> number of chunk files it wrote."""


@dataclass
class PlantCheck:
    """Which planted matches were found."""

    found: list[Plant]
    missing: list[Plant]

    @property
    def expected(self) -> int:
        """How many were planted."""
        return len(self.found) + len(self.missing)

    @property
    def all_found(self) -> bool:
        """Whether every planted match was found."""
        return not self.missing


def merge(hit_files: Sequence[Path], out: Path) -> Merged:
    """Concatenate ``hit_files`` into ``out`` sorted by query, E-value and subject; count engines."""
    rows: list[Hit] = []
    engines: dict[str, int] = {}
    for path in sorted(hit_files):
        hits, names = read_hits(path)
        rows.extend(hits)
        for name in names or ["unknown"]:
            short = name.split(" ", 1)[0]
            engines[short] = engines.get(short, 0) + 1
    rows.sort(key=lambda h: (h.qseqid, h.evalue, h.sseqid, h.sstart))
    label = ", ".join(f"{name} x{count}" for name, count in sorted(engines.items())) or None
    out.parent.mkdir(parents=True, exist_ok=True)
    write_hits(out, rows, engine=label, header=True)
    return Merged(out, rows, len(hit_files), engines)


def check_planted(hits: Sequence[Hit], plants: Sequence[Plant]) -> PlantCheck:
    """Split ``plants`` into found (some hit overlaps it on the right subject and strand) and missing."""
    by_query: dict[str, list[Hit]] = {}
    for hit in hits:
        by_query.setdefault(hit.qseqid, []).append(hit)
    found, missing = [], []
    for plant in plants:
        if any(plant.found_by(h) for h in by_query.get(plant.query, ())):
            found.append(plant)
        else:
            missing.append(plant)
    return PlantCheck(found, missing)
