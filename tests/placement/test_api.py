"""The public surface: __all__ is exactly the API, and placement stays pure (stdlib only)."""

from __future__ import annotations

import subprocess
import sys

import placement

EXPECTED = {
    "DEFAULT_BPS", "DEFAULT_WEIGHTS", "UNKNOWN_DISTANCE", "Action", "BandwidthModel", "Candidate",
    "DataRef", "Decision", "Demand", "Exclusion", "NoEligibleStoreError", "Pick", "PilotState",
    "PlannedCopy", "Ranking", "ReplicationPlan", "Score", "Site", "Source", "StoreInfo",
    "TransferSample", "Waiting", "Weights", "assign", "choose_store", "decide", "format_site",
    "idle_pick", "locality_budget", "rank", "replication_plan", "score", "tree_distance",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(placement.__all__) == EXPECTED
    assert len(placement.__all__) == len(EXPECTED)
    assert all(hasattr(placement, name) for name in placement.__all__)
    assert placement.__doc__ and "pure scoring and binding policy" in placement.__doc__


def test_placement_imports_nothing_but_the_standard_library() -> None:
    code = (
        "import sys, placement, placement.assign, placement.binding, placement.replication\n"
        "banned = ('pilotdata', 'transfer', 'agent', 'redis', 'fsspec', 'sqlalchemy', 'paramiko')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in banned)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
