"""Process entry points for the multi-process coordination tests (importable under ``spawn``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pilotdata.coordination import connect


def claim_until_empty(url: str, namespace: str, pilot: str, limit: int, barrier: Any, out: str) -> None:
    """Claim from the shared queue until it is empty; write the claimed ids to ``out`` as JSON."""
    got: list[str] = []
    with connect(url, namespace) as coord:
        coord.ping()
        barrier.wait(60)
        while batch := coord.claim(pilot, limit=limit):
            got += batch
        claimed = coord.claimed(pilot)
    Path(out).write_text(json.dumps({"claimed": got, "in_progress": claimed}))
