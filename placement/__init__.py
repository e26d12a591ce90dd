"""placement: pure scoring and binding policy for ComputeUnits and DataUnits.

Owns the cost model (queue wait + bytes to move / bandwidth by affinity-tree distance + label
penalty), candidate ranking with explanations, and the late-binding decision.

May import: the standard library only. No I/O, no Redis, no fsspec, nothing from ``pilotdata``,
``transfer`` or ``agent``: it takes plain data and returns plain data.
"""

from placement.assign import assign
from placement.bandwidth import (
    DEFAULT_BPS,
    UNKNOWN_DISTANCE,
    BandwidthModel,
    TransferSample,
    tree_distance,
)
from placement.binding import Action, Decision, Pick, Waiting, decide, idle_pick, locality_budget
from placement.cost import Source
from placement.model import (
    DEFAULT_WEIGHTS,
    Candidate,
    DataRef,
    Demand,
    PilotState,
    Site,
    Weights,
    format_site,
)
from placement.rank import Exclusion, Ranking, Score, rank, score
from placement.replication import (
    NoEligibleStoreError,
    PlannedCopy,
    ReplicationPlan,
    StoreInfo,
    choose_store,
    replication_plan,
)

__all__ = [
    "DEFAULT_BPS",
    "DEFAULT_WEIGHTS",
    "UNKNOWN_DISTANCE",
    "Action",
    "BandwidthModel",
    "Candidate",
    "DataRef",
    "Decision",
    "Demand",
    "Exclusion",
    "NoEligibleStoreError",
    "Pick",
    "PilotState",
    "PlannedCopy",
    "Ranking",
    "ReplicationPlan",
    "Score",
    "Site",
    "Source",
    "StoreInfo",
    "TransferSample",
    "Waiting",
    "Weights",
    "assign",
    "choose_store",
    "decide",
    "format_site",
    "idle_pick",
    "locality_budget",
    "rank",
    "replication_plan",
    "score",
    "tree_distance",
]
