"""The bundled pure-Python search engine, used when NCBI BLAST+ is not installed.

Seed and extend, like BLAST's first stage: every ``word``-long k-mer of each query (both strands) goes
into a dictionary; the database is scanned at a ``step`` stride, each sampled k-mer looked up; a seed
is extended without gaps in both directions with BLAST's megablast scores (match +1, mismatch -2) and
an X-drop; the best segment becomes a hit when its E-value (Karlin-Altschul, ungapped 1/-2 statistics)
is below the cut-off. Output: :class:`hits.Hit` rows, the same 12 columns as ``blastn -outfmt 6``.

Sensitivity: an alignment is found when it contains an exact run of ``word + step - 1`` bases (35 by
default). Gapped alignments are reported as their longest ungapped pieces; substitutions are handled.
That is enough for the planted matches of the synthetic workload; real searches want BLAST+.

Standard library only: this module travels to the pilots inside the task-code DataUnit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from . import hits as hitsfmt
except ImportError:  # run as a script on a pilot (python3 task.py): the modules sit side by side
    import hits as hitsfmt  # type: ignore[no-redef, import-not-found]

REWARD = 1
PENALTY = -2
LAMBDA = 1.28
"""Karlin-Altschul lambda for ungapped reward 1 / penalty -2 (NCBI's blast_stat tables)."""
K = 0.46
"""Karlin-Altschul K for the same scores."""

_COMPLEMENT = bytes.maketrans(b"ACGTNacgtn", b"TGCANtgcan")


def reverse_complement(seq: bytes) -> bytes:
    """The reverse complement of a nucleotide sequence (``N`` stays ``N``)."""
    return seq.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True)
class Params:
    """Search parameters of the k-mer engine."""

    word: int = 20
    step: int = 16
    xdrop: int = 20
    evalue: float = 1e-5
    min_length: int = 30

    def describe(self) -> str:
        """A short text for the ``# engine:`` line."""
        return f"word {self.word}, step {self.step}, ungapped, X-drop {self.xdrop}, evalue {self.evalue:g}"


@dataclass(frozen=True)
class _HSP:
    query: int
    strand: int  # +1 plus, -1 minus
    q0: int  # start on the searched query strand (0-based)
    s0: int  # start on the subject (0-based)
    length: int
    score: int
    mismatches: int


def build_index(queries: Sequence[bytes], word: int) -> dict[bytes, list[tuple[int, int, int]]]:
    """``k-mer -> [(query index, strand, position on that strand)]`` over both strands of every query."""
    index: dict[bytes, list[tuple[int, int, int]]] = {}
    for qi, seq in enumerate(queries):
        for strand, text in ((1, seq), (-1, reverse_complement(seq))):
            for pos in range(len(text) - word + 1):
                kmer = text[pos:pos + word]
                if b"N" in kmer:
                    continue
                index.setdefault(kmer, []).append((qi, strand, pos))
    return index


def _extend(q: bytes, s: bytes, qpos: int, spos: int, word: int, xdrop: int) -> tuple[int, int, int]:
    """Ungapped X-drop extension of the exact seed ``q[qpos:qpos+word] == s[spos:spos+word]``.

    Returns ``(bases added on the left, bases added on the right, score)``.
    """
    best = score = 0
    right = 0
    i, qi, si = 0, qpos + word, spos + word
    qn, sn = len(q), len(s)
    while qi + i < qn and si + i < sn:
        score += REWARD if q[qi + i] == s[si + i] else PENALTY
        i += 1
        if score > best:
            best, right = score, i
        elif best - score > xdrop:
            break
    right_score = best
    best = score = 0
    left = 0
    i = 1
    while qpos - i >= 0 and spos - i >= 0:
        score += REWARD if q[qpos - i] == s[spos - i] else PENALTY
        if score > best:
            best, left = score, i
        elif best - score > xdrop:
            break
        i += 1
    return left, right, word * REWARD + right_score + best


def evalue(score: int, query_length: int, db_length: int) -> float:
    """Karlin-Altschul E-value of an ungapped score against a database of ``db_length`` bases."""
    return K * query_length * db_length * math.exp(-LAMBDA * score)


def bitscore(score: int) -> float:
    """The normalised (bit) score of a raw score."""
    return (LAMBDA * score - math.log(K)) / math.log(2)


def search(queries: Sequence[tuple[str, bytes]], db_fasta: Path, params: Params | None = None) -> list[hitsfmt.Hit]:
    """Search ``queries`` (``(id, sequence)``) against the FASTA database; hits sorted like BLAST's.

    Sorted by query (input order), then E-value, then subject id.
    """
    p = params or Params()
    if p.word < 8 or p.step < 1:
        raise ValueError(f"word must be >= 8 and step >= 1 (got word={p.word}, step={p.step})")
    seqs = [seq.upper() for _, seq in queries]
    strands = [(seq, reverse_complement(seq)) for seq in seqs]
    index = build_index(seqs, p.word)
    found: list[tuple[str, _HSP]] = []
    db_length = 0
    word, step, xdrop = p.word, p.step, p.xdrop
    for subject_id, subject in hitsfmt.read_fasta(db_fasta):
        db_length += len(subject)
        reach: dict[tuple[int, int, int], int] = {}  # (query, strand, diagonal) -> subject end covered
        lookup = index.get
        for spos in range(0, len(subject) - word + 1, step):
            entries = lookup(subject[spos:spos + word])
            if entries is None:
                continue
            for qi, strand, qpos in entries:
                diagonal = spos - qpos
                key = (qi, strand, diagonal)
                if reach.get(key, -1) >= spos + word:
                    continue  # inside an HSP already found on this diagonal
                q = strands[qi][0 if strand == 1 else 1]
                left, right, score = _extend(q, subject, qpos, spos, word, xdrop)
                q0, s0 = qpos - left, spos - left
                length = left + word + right
                reach[key] = s0 + length
                if length < p.min_length:
                    continue
                mismatches = sum(1 for a, b in zip(q[q0:q0 + length], subject[s0:s0 + length]) if a != b)
                found.append((subject_id, _HSP(qi, strand, q0, s0, length, score, mismatches)))
    out: list[tuple[int, hitsfmt.Hit]] = []
    for subject_id, h in found:
        qlen = len(seqs[h.query])
        e = evalue(h.score, qlen, db_length)
        if e > p.evalue:
            continue
        if h.strand == 1:
            qstart, qend, sstart, send = h.q0 + 1, h.q0 + h.length, h.s0 + 1, h.s0 + h.length
        else:  # coordinates on the original query; the subject runs backwards, as BLAST reports it
            qstart, qend = qlen - (h.q0 + h.length) + 1, qlen - h.q0
            sstart, send = h.s0 + h.length, h.s0 + 1
        pident = 100.0 * (h.length - h.mismatches) / h.length
        out.append((h.query, hitsfmt.Hit(queries[h.query][0], subject_id, pident, h.length, h.mismatches, 0,
                                         qstart, qend, sstart, send, e, bitscore(h.score))))
    out.sort(key=lambda item: (item[0], item[1].evalue, item[1].sseqid, item[1].sstart))
    return [hit for _, hit in out]
