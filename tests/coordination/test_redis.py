"""Redis: the coordination conformance suite on a real redis-server, and what only Redis has
(credentials never shown, errors converted, unix sockets, key layout)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.coordination import connect
from pilotdata.coordination.keys import RedisKeys
from pilotdata.coordination.redis_backend import RedisCoordination
from pilotdata.errors import CoordinationError, DescriptionError
from pilotdata.redaction import public_url
from tests import servers
from tests.backends import BackendURLs
from tests.coordination.conformance import CoordinationConformance

SECRET = "s3cret"


@pytest.fixture
def backend_url(backend_urls: BackendURLs, tmp_path: Path) -> str:
    """The session's redis-server (tests keep apart by namespace)."""
    return backend_urls.coordination("redis", tmp_path)


class TestRedisConformance(CoordinationConformance):
    """The shared coordination behaviour on a real redis-server."""


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.RedisServer]:
    """A redis-server that requires the password ``s3cret``."""
    server = servers.start_redis(tmp_path_factory.mktemp("redis-auth"), password=SECRET)
    yield server
    server.stop()


def test_password_is_used_but_never_shown(locked_redis: servers.RedisServer, namespace: str) -> None:
    with connect(locked_redis.url, namespace) as coord:
        coord.ping()
        coord.create("cu", "c", {"description": {}})
        assert coord.get("cu", "c").state == "New"
        assert SECRET not in coord.url and SECRET not in repr(coord) and SECRET not in str(coord)
        assert coord.url == f"redis://127.0.0.1:{locked_redis.port}/0"


@pytest.mark.parametrize(
    "auth", [":wrong-pass@", "", "default:wr0ng@"], ids=["wrong-password", "no-password", "wrong-user-pass"]
)
def test_rejected_credentials_raise_coordination_error_without_secrets(
    locked_redis: servers.RedisServer, auth: str
) -> None:
    url = f"redis://{auth}127.0.0.1:{locked_redis.port}/0"
    coord = RedisCoordination(url, "ns")
    with pytest.raises(CoordinationError) as info:
        coord.ping()
    message = str(info.value)
    assert f"127.0.0.1:{locked_redis.port}" in message
    for secret in (SECRET, "wrong-pass", "wr0ng"):
        assert secret not in message and secret not in repr(coord)
    with pytest.raises(CoordinationError):
        coord.list_ids("cu")
    coord.close()


def test_unreachable_server_is_a_coordination_error() -> None:
    port = servers.free_port()
    coord = RedisCoordination(f"redis://:hunter2@127.0.0.1:{port}/0", "ns")
    with pytest.raises(CoordinationError, match=f"cannot reach Redis at redis://127.0.0.1:{port}/0") as info:
        coord.enqueue(["a"])
    assert "hunter2" not in str(info.value)


def test_unix_socket_url(tmp_path: Path, namespace: str) -> None:
    sock = tmp_path / "redis.sock"
    server = servers.start_redis(tmp_path / "r", extra=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    try:
        servers.wait_until(lambda: servers.unix_socket_open(sock), 10, "redis listening on its unix socket")
        with connect(f"unix://{sock}?db=0", namespace) as coord:
            coord.enqueue(["a"])
            assert coord.claim("p") == ["a"]
            assert coord.url == f"unix://{sock}?db=0"
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://h:1/0"),
        ("rediss://user:p%40ss@h:1/2", "rediss://user@h:1/2"),
        ("unix:///tmp/r.sock?db=1&password=pw", "unix:///tmp/r.sock?db=1"),
        ("redis://h:1", "redis://h:1"),
    ],
)
def test_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert public_url(url) == shown  # every other form: tests/test_redaction.py
    coord = RedisCoordination(url, "ns")
    assert coord.url == shown
    assert repr(coord).count("pw") == 0


def test_bad_url_is_a_description_error() -> None:
    with pytest.raises(DescriptionError, match="URL") as info:
        RedisCoordination("http://:pw@h:1/0", "ns")
    assert "pw" not in str(info.value)


def test_every_key_of_a_namespace_shares_one_hash_tag() -> None:
    keys = RedisKeys("proj")
    built = [
        keys.entity("cu", "c:1"), keys.index("cu"), keys.queue(None), keys.queue("p"), keys.claimed("p"),
        keys.heartbeat("p"), keys.live, keys.events, keys.queue_names,
    ]
    assert all(k.startswith("pd:{proj}:") for k in built)
    assert len(set(built)) == len(built)
    assert keys.queue("") == keys.shared_queue
    for bad in ("", "a{b", "c}"):
        with pytest.raises(DescriptionError, match="namespace"):
            RedisKeys(bad)


def test_events_read_by_range_and_by_blocking_read_are_the_same(backend_url: str, namespace: str) -> None:
    """``events_after`` reads the stream two ways (a script's positional rows; XREAD BLOCK when it waits for the
    next entry); every kind of entry (a creation, a transition, a recorded event with its pilot and a detail
    with empty lists, nesting, quotes and non-ASCII text) reads the same both ways."""
    coord = RedisCoordination(backend_url, namespace)
    detail = {"bytes": 12, "list": [], "obj": {}, "nested": {"a": [1, {"b": None}]}, "s": 'ünï "q" \\ /'}
    kinds = [
        lambda: coord.create("cu", "c1", {"x": 1}),
        lambda: coord.transition("cu", "c1", "Pending"),
        lambda: coord.record_event("transfer", "t1", detail, pilot="p1"),
    ]
    for make in kinds:
        before = coord.last_cursor()
        timer = threading.Timer(0.3, make)
        timer.start()
        waited = coord.events_after(before, block=10)  # nothing after ``before`` yet: the blocking read
        timer.join()
        assert len(waited) == 1
        assert coord.events_after(before) == waited  # the same entry through the script
    events = coord.events_after(None)
    assert [(e.entity, e.id, e.from_state, e.to_state, e.pilot, e.attempt) for e in events] == [
        ("cu", "c1", None, "New", None, 0), ("cu", "c1", "New", "Pending", None, 0),
        ("transfer", "t1", None, None, "p1", 0)]
    assert events[2].detail == detail
    assert all(isinstance(e.time, float) and e.time > 0 for e in events)
