"""Fixtures of the fault-injection suite: a lab per backend, each Redis lab on a redis-server of its own
with every write fsynced to its AOF (a scenario may shut it down, kill it or restart it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.backends import COORDINATION_BACKENDS
from tests.chaos.scenarios import Lab


def make_lab(backend: str, root: Path) -> Lab:
    """A lab on ``backend``; a Redis lab starts its own durable redis-server under ``root``."""
    redis = servers.start_redis(root / "redis", extra=servers.DURABLE) if backend == "redis" else None
    return Lab.make(backend, root, redis)


@pytest.fixture(params=COORDINATION_BACKENDS)
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A fresh lab on each coordination backend."""
    made = make_lab(request.param, tmp_path / "lab")
    try:
        yield made
    finally:
        made.close()
        if made.redis is not None:
            made.redis.stop()


@pytest.fixture
def redis_lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab on a durable redis-server of its own (for the Redis outage scenarios)."""
    made = make_lab("redis", tmp_path / "lab")
    try:
        yield made
    finally:
        made.close()
        assert made.redis is not None
        made.redis.stop()
