"""Secrets appear nowhere the product writes: a Redis password, S3 keys and an SSH passphrase, all
distinctive strings, through a real run (Redis with its AOF on, an S3 PilotData on moto, a fork pilot
staging from S3, ``pdata --debug``), searched for in every Redis key and the AOF file, the SQL history,
the agent's log, CU environments, ``pdata --debug`` output and every process command line.

A CU gets a secret only when its description names it (``"AWS_ACCESS_KEY_ID": "$AWS_ACCESS_KEY_ID"``):
then that CU, and only it, sees that one value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata import ComputeDataService, PilotComputeService, PilotDataService
from pilotdata.history import History, HistoryWriter
from pilotdata.session import Session
from tests import servers
from tests.agent.harness import REPO
from tests.servers import wait_until

REDIS_PW = "redis-pw-" + uuid.uuid4().hex
KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()
SECRET_KEY = "aws-secret-" + uuid.uuid4().hex
PASSPHRASE = "ssh-passphrase-" + uuid.uuid4().hex
SECRETS = {"Redis password": REDIS_PW, "S3 key id": KEY_ID, "S3 secret": SECRET_KEY, "SSH passphrase": PASSPHRASE}


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[servers.RedisServer]:
    server = servers.start_redis(tmp_path / "redis", password=REDIS_PW, extra=servers.DURABLE)
    yield server
    server.stop()


def _leaks(text: str | bytes, allow: tuple[str, ...] = ()) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in SECRETS.items() if name not in allow and value.encode() in data]


def _cmdlines() -> bytes:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                found.append(Path(entry.path, "cmdline").read_bytes())
            except OSError:
                pass
    return b"\n".join(found)


def test_secrets_appear_nowhere(secret_redis: servers.RedisServer, moto_server: servers.MotoServer,
                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    bucket = "secrets-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET_KEY, region_name="us-east-1").create_bucket(Bucket=bucket)
    secret_env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                  "AWS_ENDPOINT_URL": moto_server.endpoint_url, "PDATA_SSH_PASSPHRASE": PASSPHRASE}
    for name, value in secret_env.items():
        monkeypatch.setenv(name, value)  # the client's environment, inherited by the fork pilot's agent
    namespace = "sec" + uuid.uuid4().hex[:8]
    work = tmp_path / "work"
    session = Session(secret_redis.url, namespace=namespace, history_url=f"sqlite:///{tmp_path / 'history.sqlite'}")
    pcs = PilotComputeService(session=session)
    cds = ComputeDataService(session=session)
    try:
        pd = PilotDataService(session=session).create_pilot({"service_url": f"s3://{bucket}/pd"})
        source = tmp_path / "input.txt"
        source.write_text("some input\n")
        du = cds.submit_data_unit({"file_urls": [str(source)]}, pilot_data=pd, background=False)
        pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 3,
                                  "working_directory": str(work)})
        cds.add_pilot_compute_service(pcs)
        plain = cds.submit_compute_unit({"executable": "/usr/bin/env", "input_data": [du.id]})
        asks = cds.submit_compute_unit({"executable": "/usr/bin/env",
                                        "environment": {"AWS_ACCESS_KEY_ID": "$AWS_ACCESS_KEY_ID"}})
        sleeper = cds.submit_compute_unit({"executable": "/bin/sh",
                                           "arguments": ["-c", "echo $AWS_SECRET_ACCESS_KEY $PDATA_URL; sleep 2"]})
        wait_until(lambda: sleeper.get_state() == "Running", 60, "the sleeper CU to run")
        commands = _cmdlines()  # every process now: client, agent, reaper, CUs
        cds.wait(timeout=120)
        assert [cu.get_state() for cu in (plain, asks, sleeper)] == ["Done"] * 3
        sandboxes = {cu.id: Path(cu.get_details()["sandbox"]) for cu in (plain, asks, sleeper)}
        debug = subprocess.run(
            [sys.executable, "-m", "pilotdata.cli", "--debug", "get", du.id, str(tmp_path / "fetched")],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
            env={**os.environ, "PDATA_URL": secret_redis.url, "PDATA_NAMESPACE": namespace},
        )
        assert debug.returncode == 0, debug.stderr[-3000:]
        assert "DEBUG: botocore" in debug.stderr  # the library's request logs were on
        assert (tmp_path / "fetched" / "input.txt").read_text() == "some input\n"
        pcs.cancel_pilot(pilot.id)
        with History(session.history_url) as history:
            HistoryWriter(session.coord.inner, history).drain()
    finally:
        session.close()

    plain_env = (sandboxes[plain.id] / "stdout").read_text()
    asks_env = (sandboxes[asks.id] / "stdout").read_text()
    assert _leaks(plain_env) == [] and "PDATA_CU_ID=" in plain_env and "PATH=" in plain_env
    assert f"AWS_ACCESS_KEY_ID={KEY_ID}" in asks_env and _leaks(asks_env, allow=("S3 key id",)) == []
    assert (sandboxes[sleeper.id] / "stdout").read_text().strip() == ""  # $VARs it never asked for: empty
    places = {
        "Redis keys": servers.redis_dump(secret_redis.url),
        "Redis AOF": b"".join(p.read_bytes() for p in (secret_redis.directory).rglob("*.aof*") if p.is_file()),
        "SQL history": (tmp_path / "history.sqlite").read_bytes(),
        "agent log": b"".join(p.read_bytes() for p in work.glob(f"{pilot.id}.std*")),
        "pdata --debug": (debug.stdout + debug.stderr).encode(),
        "command lines": commands,
        "other CU outputs": b"".join(p.read_bytes() for p in work.rglob("std*") if p.parent.name != asks.id),
    }
    assert places["Redis AOF"] and places["agent log"] and len(places["SQL history"]) > 0
    found = {where: _leaks(data) for where, data in places.items()}
    assert found == {where: [] for where in places}, found
