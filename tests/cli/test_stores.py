"""``pdata store add|ls|show|rm`` on real file:// stores, and bad input that changes nothing."""

from __future__ import annotations

from pathlib import Path

from pilotdata.data import ReplicaManager
from pilotdata.descriptions import DataUnitDescription
from pilotdata.session import Session
from tests.cli.conftest import Pdata, snapshot


def test_store_add_ls_show_rm(pdata: Pdata, tmp_path: Path) -> None:
    out = pdata("store", "add", "site-a", str(tmp_path / "a"), "--label", "datacenter=dc1", "--label",
                "machine=m1", "--size", "10GB")
    assert out.stdout == "site-a\n"
    assert (tmp_path / "a").is_dir()  # the root is created when the store is added
    added = pdata.json("store", "add", "site-b", f"file://{tmp_path / 'b'}", "--label", "tier=scratch")
    assert added == {"id": "site-b", "url": f"file://{tmp_path / 'b'}", "labels": {"tier": "scratch"}, "size": None}

    rows = pdata.json("store", "ls")
    assert [(r["id"], r["size"], r["labels"]) for r in rows] == [
        ("site-a", 10**10, {"datacenter": "dc1", "machine": "m1"}), ("site-b", None, {"tier": "scratch"})]
    table = pdata("store", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "URL", "QUOTA", "LABELS"]
    assert table[1].split() == ["site-a", f"file://{tmp_path / 'a'}", "10.0", "GB", "datacenter=dc1,machine=m1"]

    (tmp_path / "a" / "junk").write_bytes(b"x" * 1234)
    shown = pdata.json("store", "show", "site-a")
    assert shown["used"] == 1234 and shown["size"] == 10**10 and shown["data_units"] == []
    assert "used:       1.2 kB" in pdata("store", "show", "site-a").stdout

    assert pdata("store", "rm", "site-b").stderr == "removed store site-b\n"
    assert [r["id"] for r in pdata.json("store", "ls")] == ["site-a"]
    assert (tmp_path / "b").is_dir()  # files stay where they are


def test_store_rm_refuses_a_store_holding_replicas(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    session = Session()
    try:
        ops = ReplicaManager(session.coord)
        du = ops.register(DataUnitDescription(name="empty"))
        ops.open_empty(du, "s1")  # a usable (empty) DataUnit with a complete replica on s1
    finally:
        session.close()
    before = snapshot()
    line = pdata.error("store", "rm", "s1")
    assert f"holds replicas of {du}" in line and "--force" in line
    assert snapshot() == before
    pdata("store", "rm", "s1", "--force")
    assert pdata.json("store", "ls") == []


def test_bad_store_input_changes_nothing(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    before = snapshot()
    cases = {
        ("store", "add", "s2", "gram://grid.example.org/x"): "unknown PilotData URL scheme 'gram'",
        ("store", "add", "s2", str(tmp_path / "s2"), "--label", "nolabel"): "'nolabel' is not KEY=VALUE",
        ("store", "add", "s2", str(tmp_path / "s2"), "--label", "=v"): "'=v' is not KEY=VALUE",
        ("store", "add", "s2", str(tmp_path / "s2"), "--size", "-3GB"): "--size",
        ("store", "add", "s2", str(tmp_path / "s2"), "--label", "a=1", "--label", "a=2"): "'a' is given twice",
        ("store", "add", "s1", str(tmp_path / "other")): "a store named 's1' already exists",
        ("store", "add", "s2", "s3://"): "s3://",
        ("store", "show", "s9"): "store 's9' does not exist",
        ("store", "rm", "s9"): "store 's9' does not exist",
    }
    for args, expected in cases.items():
        line = pdata.error(*args)
        assert expected in line, (args, line)
    assert snapshot() == before
    assert not (tmp_path / "s2").exists()


def test_store_with_password_in_url_is_refused_without_echoing_it(pdata: Pdata) -> None:
    line = pdata.error("store", "add", "s1", "sftp://user:hunter2pw@127.0.0.1:1/data")
    assert "hunter2pw" not in line
    assert snapshot()["pd"] == {}
