"""The BLAST-like example workload (``scripts/blast``; see docs/blast.md).

Modules: :mod:`.data` (synthetic database, queries, planted matches, chunks), :mod:`.hits` (the
outfmt-6 hits format), :mod:`.kmer` (pure-Python fallback engine), :mod:`.task` (the per-chunk program
a ComputeUnit runs), :mod:`.merge` (merging, checking planted matches), :mod:`.workflow` (the
Pilot-API orchestration), :mod:`.report` (bytes moved and saved, the summary), ``run.py`` (the CLI).
"""
