"""The hits format both engines write: BLAST's tabular ``-outfmt 6`` plus ``#`` comment lines.

Owns the 12 columns (:data:`COLUMNS`), the :class:`Hit` record, reading and writing hits files, and
the FASTA reader both engines and the generator use. A hits file may start with comment lines; the
line ``# engine: <name> (<details>)`` says which engine wrote it (BLAST's own outfmt 6 has none).

Standard library only: this module travels to the pilots inside the task-code DataUnit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("qseqid", "sseqid", "pident", "length", "mismatch", "gapopen",
           "qstart", "qend", "sstart", "send", "evalue", "bitscore")
"""The columns of ``blastn -outfmt 6`` (query id, subject id, % identity, alignment length, ...)."""

ENGINE_PREFIX = "# engine: "


@dataclass(frozen=True)
class Hit:
    """One row of a hits file (an HSP). Subject coordinates run backwards on the minus strand."""

    qseqid: str
    sseqid: str
    pident: float
    length: int
    mismatch: int
    gapopen: int
    qstart: int
    qend: int
    sstart: int
    send: int
    evalue: float
    bitscore: float

    @property
    def strand(self) -> str:
        """``plus`` or ``minus`` (BLAST reports a minus-strand subject as ``sstart > send``)."""
        return "minus" if self.sstart > self.send else "plus"

    def to_row(self) -> str:
        """The tab-separated line, formatted as BLAST formats it."""
        evalue = "0.0" if self.evalue == 0 else f"{self.evalue:.2e}"
        bitscore = f"{self.bitscore:.0f}" if self.bitscore >= 100 else f"{self.bitscore:.1f}"
        return "\t".join([self.qseqid, self.sseqid, f"{self.pident:.3f}", str(self.length), str(self.mismatch),
                          str(self.gapopen), str(self.qstart), str(self.qend), str(self.sstart), str(self.send),
                          evalue, bitscore])

    @classmethod
    def from_row(cls, line: str) -> Hit:
        """Parse one tab-separated line; :class:`ValueError` naming the line if it is not 12 columns."""
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != len(COLUMNS):
            raise ValueError(f"expected {len(COLUMNS)} tab-separated columns, got {len(parts)}: {line[:80]!r}")
        q, s, pid, length, mm, gaps, qs, qe, ss, se, ev, bits = parts
        return cls(q, s, float(pid), int(length), int(mm), int(gaps), int(qs), int(qe), int(ss), int(se),
                   float(ev), float(bits))


def write_hits(path: Path, hits: Iterable[Hit], *, engine: str | None = None, header: bool = False) -> int:
    """Write ``hits`` (optionally after an engine line and a column header); return the row count.

    Written to ``<path>.part`` and renamed, so a reader never sees half a file.
    """
    tmp = path.with_name(path.name + ".part")
    count = 0
    with open(tmp, "w", encoding="utf-8") as out:
        if engine:
            out.write(f"{ENGINE_PREFIX}{engine}\n")
        if header:
            out.write("# " + "\t".join(COLUMNS) + "\n")
        for hit in hits:
            out.write(hit.to_row() + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_hits(path: Path) -> tuple[list[Hit], list[str]]:
    """The hits of a file and the engine names its ``# engine:`` lines give (possibly none)."""
    hits: list[Hit] = []
    engines: list[str] = []
    with open(path, encoding="utf-8") as src:
        for number, line in enumerate(src, 1):
            if line.startswith(ENGINE_PREFIX):
                engines.append(line[len(ENGINE_PREFIX):].strip())
            elif line.startswith("#") or not line.strip():
                continue
            else:
                try:
                    hits.append(Hit.from_row(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
    return hits, engines


def read_fasta(path: Path) -> Iterator[tuple[str, bytes]]:
    """``(id, sequence)`` for each record of a FASTA file (id: the first word of the header)."""
    name: str | None = None
    parts: list[bytes] = []
    with open(path, "rb") as src:
        for raw in src:
            line = raw.strip()
            if line.startswith(b">"):
                if name is not None:
                    yield name, b"".join(parts)
                fields = line[1:].split()
                name = fields[0].decode("ascii", "replace") if fields else ""
                parts = []
            elif line:
                if name is None:
                    raise ValueError(f"{path}: sequence data before the first '>' header")
                parts.append(line.upper())
    if name is not None:
        yield name, b"".join(parts)
