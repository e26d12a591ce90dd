"""Hypothesis strategies for placement inputs: small label alphabets so sites, caches and ties collide."""

from __future__ import annotations

from hypothesis import strategies as st

from placement import Candidate, DataRef, Demand, PilotState, Site

DATACENTERS = ("dc0", "dc1", "dc2")
MACHINES = ("m0", "m1", "m2")
DU_IDS = tuple(f"du{i}" for i in range(6))

sites: st.SearchStrategy[Site] = st.tuples(st.sampled_from(DATACENTERS), st.sampled_from(MACHINES))
sites_or_unknown: st.SearchStrategy[Site] = st.one_of(sites, sites, sites, st.just(()))
affinities: st.SearchStrategy[Site] = st.one_of(
    st.just(()), st.tuples(st.sampled_from(DATACENTERS)), sites
)


@st.composite
def data_refs(draw: st.DrawFn, du_id: str | None = None) -> DataRef:
    """A DataRef with 0-3 replicas (PD ids given or not)."""
    ident = du_id or draw(st.sampled_from(DU_IDS))
    replica_sites = tuple(draw(st.lists(sites, max_size=3, unique=True)))
    with_pds = draw(st.booleans())
    pds = tuple(f"pd-{ident}-{i}" for i in range(len(replica_sites))) if with_pds else ()
    size = draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**12)))
    return DataRef(ident, size, replica_sites=replica_sites, replica_pds=pds)


@st.composite
def demands(draw: st.DrawFn, cu_id: str = "cu") -> Demand:
    """A Demand with unique inputs, 1-8 slots and maybe an affinity (soft or required)."""
    ids = draw(st.lists(st.sampled_from(DU_IDS), max_size=3, unique=True))
    inputs = tuple(draw(data_refs(du_id=ident)) for ident in ids)
    return Demand(
        cu_id,
        slots=draw(st.integers(1, 8)),
        inputs=inputs,
        affinity=draw(affinities),
        affinity_required=draw(st.booleans()),
    )


@st.composite
def candidates(draw: st.DrawFn, pilot_id: str) -> Candidate:
    """A running or batch-queued pilot with any load and cache."""
    total = draw(st.integers(0, 16))
    state: PilotState = draw(st.sampled_from(("running", "queued")))
    return Candidate(
        pilot_id,
        site=draw(sites_or_unknown),
        total_slots=total,
        free_slots=draw(st.integers(0, total)),
        queued_slots=draw(st.integers(0, 20)),
        cached_dus=frozenset(draw(st.lists(st.sampled_from(DU_IDS), max_size=4))),
        state=state,
        expected_start_s=draw(st.floats(0, 3600)) if state == "queued" else 0.0,
        mean_task_seconds=draw(st.floats(0.5, 600)),
        fetching=tuple(draw(st.dictionaries(st.sampled_from(DU_IDS), st.floats(0, 3600), max_size=2)).items()),
    )


@st.composite
def candidate_lists(draw: st.DrawFn, min_size: int = 0, max_size: int = 8) -> list[Candidate]:
    """Candidates with unique pilot ids."""
    count = draw(st.integers(min_size, max_size))
    names = draw(st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=count,
                          max_size=count, unique=True))
    return [draw(candidates(name)) for name in names]
