"""The trace export of ``pdata report --trace FILE``: one row per ComputeUnit, CSV or JSON.

Columns (:data:`pilotdata.inspect.TraceRow.FIELDS`): id, name, run, state, attempt, pilot, site, host;
the time it was created and last entered each state (``pending``, ``staging_input``, ``running``,
``staging_output``) and ``ended`` (epoch seconds, UTC; empty when it never got there); ``queue_wait``
and ``duration`` in seconds; exit code and reason; and its bytes by category (``bytes_uploaded`` ...
``bytes_output``, see :class:`pilotdata.records.ByteCategory`). The JSON form is a list of objects
with the same keys, the bytes as one ``bytes`` object.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import IO

from pilotdata.inspect import TraceRow

FORMATS = ("csv", "json")


def write_trace(rows: Iterable[TraceRow], out: IO[str], fmt: str) -> int:
    """Write ``rows`` to ``out`` as ``csv`` or ``json``; return how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"trace format {fmt!r}: expected one of {', '.join(FORMATS)}")
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(TraceRow.FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.flat().items()})
            n += 1
        return n
    out.write("[")
    for row in rows:
        out.write(("," if n else "") + "\n " + json.dumps(asdict(row), sort_keys=True))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n
