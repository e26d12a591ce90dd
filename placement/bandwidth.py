"""Bandwidth by affinity-tree distance, and how measured transfers refine it.

Owns :func:`tree_distance` and :class:`BandwidthModel`. The distance between two sites is
``depth - common prefix length`` with ``depth = max(len(a), len(b))``: 0 on the same machine, 1 within a
datacenter, 2 across datacenters for the usual (datacenter, machine) paths. An unknown site (``()``)
is :data:`UNKNOWN_DISTANCE` away from everything, which the model costs like its farthest bucket.

The model keeps, per distance bucket, a prior rate plus the evidence seen so far (bytes and seconds
of measured transfers). Its estimate is the pooled rate
``(prior_bytes + observed bytes) / (prior_bytes / prior_rate + observed seconds)``: the prior counts
as ``prior_bytes`` of evidence, so a few small samples nudge it and a lot of history replaces it.
Refining is cumulative: ``m.refine(a).refine(b)`` equals ``m.refine(a + b)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from placement.model import Site

UNKNOWN_DISTANCE = 99
"""The distance to or from an unknown site (``()``); it falls in the farthest bucket."""

DEFAULT_BPS: tuple[float, ...] = (1e12, 1e9, 1e8)
"""Default rates (bytes/s) by distance: same machine (a link, ~free), same datacenter, wide area."""

DEFAULT_LEVEL_NAMES: tuple[str, ...] = ("same machine", "same datacenter", "wide area")
"""Human names of the default buckets, used in explanations."""

DEFAULT_PRIOR_BYTES = float(1 << 30)
"""How much evidence (bytes transferred) the prior rates are worth: 1 GiB."""


def tree_distance(a: Site, b: Site) -> int:
    """Affinity-tree distance: ``max(len(a), len(b)) - common prefix length``; unknown -> far."""
    if not a or not b:
        return UNKNOWN_DISTANCE
    common = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        common += 1
    return max(len(a), len(b)) - common


class TransferSample(NamedTuple):
    """One measured transfer: ``nbytes`` moved from ``src`` to ``dst`` in ``seconds``.

    Plain 4-tuples ``(src, dst, nbytes, seconds)`` are accepted wherever samples are.
    """

    src: Site
    dst: Site
    nbytes: float
    seconds: float


@dataclass(frozen=True)
class BandwidthModel:
    """Estimated bytes/s between two sites, by affinity-tree distance.

    ``bps_by_distance[d]`` is the prior rate at distance ``d``; distances beyond the tuple use its last
    entry. ``observed_bytes`` / ``observed_seconds`` hold the evidence accumulated by :meth:`refine`
    (empty, or one entry per bucket). ``level_names`` label the buckets in explanations.
    """

    bps_by_distance: tuple[float, ...] = DEFAULT_BPS
    prior_bytes: float = DEFAULT_PRIOR_BYTES
    observed_bytes: tuple[float, ...] = ()
    observed_seconds: tuple[float, ...] = ()
    level_names: tuple[str, ...] = DEFAULT_LEVEL_NAMES
    _rates: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bps = tuple(float(rate) for rate in self.bps_by_distance)
        if not bps:
            raise ValueError("BandwidthModel.bps_by_distance needs at least one rate")
        for rate in bps:
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"BandwidthModel.bps_by_distance must hold finite rates > 0, got {rate}")
        if not (math.isfinite(self.prior_bytes) and self.prior_bytes > 0):
            raise ValueError(f"BandwidthModel.prior_bytes must be finite and > 0, got {self.prior_bytes}")
        for name in ("observed_bytes", "observed_seconds"):
            values = getattr(self, name)
            if values and len(values) != len(bps):
                raise ValueError(f"BandwidthModel.{name} must have one entry per distance ({len(bps)})")
            if any(not (math.isfinite(v) and v >= 0) for v in values):
                raise ValueError(f"BandwidthModel.{name} must hold finite values >= 0")
        object.__setattr__(self, "bps_by_distance", bps)
        nbytes = self.observed_bytes or (0.0,) * len(bps)
        seconds = self.observed_seconds or (0.0,) * len(bps)
        rates = tuple(
            (self.prior_bytes + b) / (self.prior_bytes / rate + s) if s > 0 else rate
            for rate, b, s in zip(bps, nbytes, seconds, strict=True)
        )
        object.__setattr__(self, "_rates", rates)

    @classmethod
    def from_rates(
        cls,
        *,
        same_machine: float = DEFAULT_BPS[0],
        same_datacenter: float = DEFAULT_BPS[1],
        wide_area: float = DEFAULT_BPS[2],
        prior_bytes: float = DEFAULT_PRIOR_BYTES,
    ) -> BandwidthModel:
        """A two-level (datacenter, machine) model from named rates in bytes/s."""
        return cls((same_machine, same_datacenter, wide_area), prior_bytes=prior_bytes)

    @property
    def rates(self) -> tuple[float, ...]:
        """The current estimate (bytes/s) per distance bucket, evidence included."""
        return self._rates

    def bucket(self, distance: int) -> int:
        """The bucket index that a tree distance falls in (the last one for far or unknown)."""
        return min(max(distance, 0), len(self._rates) - 1)

    def bandwidth(self, distance: int) -> float:
        """Estimated bytes/s at a tree distance."""
        return self._rates[self.bucket(distance)]

    def bandwidth_between(self, src: Site, dst: Site) -> float:
        """Estimated bytes/s from site ``src`` to site ``dst``."""
        return self.bandwidth(tree_distance(src, dst))

    def transfer_seconds(self, nbytes: float, src: Site, dst: Site) -> float:
        """Estimated seconds to move ``nbytes`` from ``src`` to ``dst``."""
        return nbytes / self.bandwidth_between(src, dst) if nbytes else 0.0

    def level_name(self, distance: int) -> str:
        """A readable name for a distance: ``same datacenter``, ``wide area``, ``distance 3`` ..."""
        if distance == UNKNOWN_DISTANCE:
            name = self.level_names[-1] if self.level_names else "far"
            return f"unknown site, as {name}"
        if distance < len(self.level_names):
            return self.level_names[distance]
        if self.level_names and len(self.level_names) == len(self._rates):
            return self.level_names[-1]
        return f"distance {distance}"

    def refine(self, samples: Iterable[tuple[Site, Site, float, float]]) -> BandwidthModel:
        """A new model with measured transfers ``(src, dst, nbytes, seconds)`` added to the evidence.

        Samples with no bytes or no positive duration (a hard link "moves" data in no time) carry no
        rate information and are skipped, as are non-finite ones. Each sample lands in the bucket of
        its tree distance, so the estimate there moves toward the samples' pooled rate.
        """
        size = len(self.bps_by_distance)
        nbytes = list(self.observed_bytes or (0.0,) * size)
        seconds = list(self.observed_seconds or (0.0,) * size)
        for src, dst, moved, took in samples:
            moved_f, took_f = float(moved), float(took)
            if not (math.isfinite(moved_f) and math.isfinite(took_f)) or moved_f <= 0 or took_f <= 0:
                continue
            index = self.bucket(tree_distance(tuple(src), tuple(dst)))
            nbytes[index] += moved_f
            seconds[index] += took_f
        return BandwidthModel(
            self.bps_by_distance,
            prior_bytes=self.prior_bytes,
            observed_bytes=tuple(nbytes),
            observed_seconds=tuple(seconds),
            level_names=self.level_names,
        )
