"""One byte accounting: a run that uploads, replicates (a copy to S3), stages by copy (from S3 into a pilot
cache), links (from a local store into the cache), hits the cache and writes outputs; every view gives the
same numbers: ``pdata report``, ``pdata run show``, the sum of ``pdata cu show``, the trace, the history."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import boto3
import pytest

from pilotdata.history import History, queries
from tests.cli.conftest import Pdata
from tests.servers import MotoServer

DB, QUERIES = 300_000, 40_000


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; credentials in the environment, as a user (and the pilots started here) would have them."""
    bucket = "bytes-" + uuid.uuid4().hex[:10]
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return f"s3://{bucket}/pd"


def test_every_view_agrees_on_the_bytes_of_a_run(pdata: Pdata, tmp_path: Path, s3_env: str,
                                                 moto_server: MotoServer) -> None:
    (tmp_path / "db.fa").write_bytes(b"A" * DB)
    (tmp_path / "q.fa").write_bytes(b"C" * QUERIES)
    pdata("store", "add", "local", f"file://{tmp_path / 'local'}")
    pdata("store", "add", "cloud", s3_env, "--option",
          f'client_kwargs={{"endpoint_url": "{moto_server.endpoint_url}"}}')
    run = "bytes-run"
    db = pdata("put", str(tmp_path / "db.fa"), "--name", "db", "--store", "local", "--run", run).stdout.strip()
    q = pdata("put", str(tmp_path / "q.fa"), "--name", "q", "--store", "cloud", "--run", run).stdout.strip()
    pdata("store", "add", "local2", f"file://{tmp_path / 'local2'}")
    pdata("replicate", "db", "--to", "local2")  # a replica made as a link: linked, but no CU's input
    pdata("replicate", "db", "--to", "cloud")  # a real copy: store to store, file to S3
    out = pdata("put", "--empty", "--name", "out", "--store", "local", "--run", run).stdout.strip()
    pdata("pilot", "start", "fork://localhost", "--cores", "1", "--wait", "--timeout", "60")
    try:
        cus = []
        for i in range(2):  # the first fetches (db linked from local, q copied from S3); the second hits the cache
            cus.append(pdata("submit", "--run", run, "--input", "db", "--input", "q", "--output", f"{out}:hits-*",
                             "--", "/bin/sh", "-c", f"head -c {1000 * (i + 1)} db.fa > hits-{i}").stdout.strip())
            pdata("wait", cus[-1], "--timeout", "120")
    finally:
        pdata("pilot", "stop", "--all")
    expected = {"uploaded": DB + QUERIES, "replicated": DB, "staged": QUERIES, "linked": DB + DB,
                "cache_hit": DB + QUERIES, "output": 1000 + 2000}
    expected |= {"moved": DB + QUERIES + DB + QUERIES + 3000, "inputs": 2 * (DB + QUERIES),
                 "saved": DB + DB + QUERIES}

    report = pdata.json("report", "--run", run)["bytes"]
    assert report == expected
    assert pdata.json("run", "show", run)["bytes"] == expected
    per_cu = [pdata.json("cu", "show", cu) for cu in cus]
    assert [(i["du"], i["source"]) for i in per_cu[0]["inputs"]] == [(db, "local"), (q, "cloud")]  # which store
    assert [(i["category"], i["bytes"]) for i in per_cu[0]["inputs"]] == [("linked", DB), ("staged", QUERIES)]
    assert [(i["category"], i["bytes"]) for i in per_cu[1]["inputs"]] == [("cache_hit", DB), ("cache_hit", QUERIES)]
    per_cu_expected = {**expected, "linked": DB}  # the replica's link is no CU's
    for category in ("staged", "linked", "cache_hit", "output"):
        assert sum(c["bytes"][category] for c in per_cu) == per_cu_expected[category], category
    assert sum(c["bytes"]["inputs"] for c in per_cu) == expected["inputs"]
    assert sum(c["bytes"]["saved"] for c in per_cu) == expected["saved"]
    trace = list(csv.DictReader(io.StringIO(pdata("report", "--run", run, "--trace", "-").stdout)))
    for category in ("staged", "linked", "cache_hit", "output"):
        assert sum(int(r[f"bytes_{category}"]) for r in trace) == per_cu_expected[category], category
    text = pdata("report", "--run", run).stdout
    assert "683.0 kB moved" in text and "staged 40.0 kB" in text
    assert ("640.0 kB of inputs not moved (linked 300.0 kB, cache hits 340.0 kB); replicas made as links 300.0 kB"
            in text)
    with History() as history:  # the history's transfer records, one per movement, each in its category
        records = queries.transfers(history)
        bandwidth = {(b.source_url, b.destination_url) for b in queries.bandwidth_samples(history)}
    assert sorted((t.category, t.du) for t in records) == sorted([
        ("uploaded", db), ("uploaded", q), ("replicated", db), ("linked", db), ("linked", db), ("staged", q),
        ("cache_hit", db),
        ("cache_hit", q), ("output", out), ("output", out)])
    assert all(t.run == run for t in records)
    # the bandwidth model learns from copies only: the link and the cache hits moved nothing
    local, cloud = f"file://{tmp_path / 'local'}", s3_env
    pairs = {(src, dst.split(":")[0] if dst is not None and dst.startswith("pilot-cache") else dst)
             for src, dst in bandwidth}
    assert pairs == {
        (str(tmp_path / "db.fa"), local), (str(tmp_path / "q.fa"), cloud), (local, cloud), (cloud, "pilot-cache"),
        ("sandbox", local)}
