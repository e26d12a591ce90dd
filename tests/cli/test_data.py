"""DataUnit commands: put, ls, show, get, replicate, mv, rm, verify on real file:// stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import transfer
from pilotdata.data import ReplicaManager, default_checksum
from pilotdata.descriptions import DataUnitDescription
from pilotdata.session import Session
from tests.cli.conftest import Pdata, snapshot
from transfer.digests import available, new_hash

needs_transfer = pytest.mark.skipif(not hasattr(transfer, "copy_files"),
                                    reason="the transfer engine (transfer.copy_files) has not landed yet")


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "in" / "db"
    db.mkdir(parents=True)
    (db / "part1.fa").write_bytes(b">s1\nACGT\n" * 5000)
    (db / "part2.fa").write_bytes(b">s2\nTTGA\n" * 300)
    query = tmp_path / "in" / "query.fa"
    query.write_text(">q\nACGTACGT\n")
    return db, query


def _digest(path: Path, algorithm: str) -> str:
    hasher = new_hash(algorithm)
    hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _empty_du(name: str, store: str) -> str:
    session = Session()
    try:
        ops = ReplicaManager(session.coord)
        du = ops.register(DataUnitDescription(name=name))
        ops.open_empty(du, store)
        return du
    finally:
        session.close()


def test_ls_show_rm_of_an_empty_data_unit(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    du = pdata("put", "--empty", "--name", "results").stdout.strip()  # the only store is the default
    assert du.startswith("du-") and (tmp_path / "s1" / du).is_dir()
    assert pdata.json("ls") == [{"id": du, "name": "results", "state": "Running", "files": 0, "size": 0,
                                 "replicas": {"s1": "complete"}}]
    table = pdata("ls").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "FILES", "SIZE", "REPLICAS"]
    assert table[1].split() == [du, "results", "Running", "0", "0", "B", "s1"]
    shown = pdata.json("show", "results")  # a unique name works as well as the id
    assert shown["id"] == du and shown["replicas"]["s1"]["status"] == "complete" and shown["files"] == []
    assert pdata.json("ls", "--store", "s1")[0]["id"] == du
    pdata("store", "add", "s2", str(tmp_path / "s2"))
    assert pdata.json("ls", "--store", "s2") == []
    assert "has no replica on 's2'" in pdata.error("rm", du, "--store", "s2")
    assert "s1 holds the last replica" in pdata.error("rm", du, "--store", "s1")
    assert pdata("rm", "results").stderr == f"removed {du}\n"
    assert pdata.json("show", du)["state"] == "Canceled"
    assert not (tmp_path / "s1" / du).exists()


def test_ambiguous_name_and_unknown_ids(pdata: Pdata, tmp_path: Path) -> None:
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    a, b = _empty_du("twin", "s1"), _empty_du("twin", "s1")
    before = snapshot()
    line = pdata.error("rm", "twin")
    assert "ambiguous" in line and a in line and b in line
    assert pdata.error("show", "du-nope") == "Error: DataUnit 'du-nope' does not exist"
    assert "did you mean" in pdata.error("show", a[:-1])
    for args in (["get", "du-nope", str(tmp_path / "out")], ["replicate", "du-nope", "--to", "s1"],
                 ["mv", "du-nope", "--to", "s1"], ["rm", "du-nope"], ["verify", "du-nope"],
                 ["replicate", a, "--to", "nowhere"], ["mv", a, "--to", "nowhere"]):
        assert "does not exist" in pdata.error(*args), args
    assert "Missing option '--to'" in pdata.error("replicate", a)
    assert snapshot() == before
    assert not (tmp_path / "out").exists()


def test_put_bad_input_records_nothing(pdata: Pdata, tmp_path: Path) -> None:
    db, query = _inputs(tmp_path)
    assert "no store yet" in pdata.error("put", str(query))
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    pdata("store", "add", "s2", str(tmp_path / "s2"))
    before = snapshot()
    assert "several stores (s1, s2): choose one with --store" in pdata.error("put", str(query))
    line = pdata.error("put", str(tmp_path / "missing.fa"), "--store", "s1")
    assert "missing.fa" in line and "does not exist" in line
    assert "store 's3' does not exist" in pdata.error("put", str(query), "--store", "s3")
    assert "'datacenter' is not KEY=VALUE" in pdata.error("put", str(query), "--store", "s1", "--label", "datacenter")
    assert "give PATHS to upload, or --empty" in pdata.error("put", "--store", "s1")
    assert "give PATHS to upload, or --empty" in pdata.error("put", str(query), "--empty", "--store", "s1")
    assert snapshot() == before
    assert list((tmp_path / "s1").iterdir()) == []



@pytest.mark.skipif(not available("xxh128"), reason="xxhash is not installed (the fast-hash extra)")
def test_checksum_setting_flag_environment_and_config_file(pdata: Pdata, tmp_path: Path) -> None:
    """--checksum > PDATA_CHECKSUM > the config file's checksum > the default; a bad one is exit 2 naming
    where it came from, and records nothing."""
    db, query = _inputs(tmp_path)
    pdata("store", "add", "s1", str(tmp_path / "s1"))
    shown = pdata.json("config", "show")["checksum"]
    assert shown == {"value": default_checksum(), "source": "default"}

    def algorithms(du: str) -> set[str]:
        return {f["algorithm"] for f in pdata.json("show", du)["files"]}

    assert algorithms(pdata("--checksum", "xxh128", "put", str(db)).stdout.strip()) == {"xxh128"}
    assert algorithms(pdata("put", str(query), env={"PDATA_CHECKSUM": "sha256"}).stdout.strip()) == {"sha256"}
    home = Path(os.environ["PDATA_HOME"])
    (home / "config.toml").write_text('checksum = "xxh128"\n')
    assert pdata.json("config", "show")["checksum"] == {"value": "xxh128", "source": "config file"}
    assert algorithms(pdata("put", str(query), "--name", "q2").stdout.strip()) == {"xxh128"}
    human = pdata("show", "q2").stdout
    assert "CHECKSUM" in human and "xxh128:" in human
    before = pdata.json("ls")
    assert "PDATA_CHECKSUM: 'md5' is not a checksum algorithm" in pdata.error("put", str(query),
                                                                             env={"PDATA_CHECKSUM": "md5"})
    line = pdata.error("--checksum", "sha1", "put", str(query))
    assert "--checksum: 'sha1' is not a checksum algorithm; choose one of sha256, blake3, xxh128" in line
    (home / "config.toml").write_text('checksum = "crc"\n')
    assert f"checksum in {home / 'config.toml'}: 'crc'" in pdata.error("put", str(query))
    assert pdata.json("ls") == before  # nothing recorded

@needs_transfer
def test_put_show_get_replicate_mv_verify(pdata: Pdata, tmp_path: Path) -> None:
    db, query = _inputs(tmp_path)
    pdata("store", "add", "s1", str(tmp_path / "s1"), "--label", "datacenter=a")
    pdata("store", "add", "s2", str(tmp_path / "s2"), "--label", "datacenter=b")
    put = pdata("--progress", "put", str(db), "--name", "genome", "--store", "s1")
    du = put.stdout.strip()  # only the id on stdout: DU=$(pdata put ...) works with bars on
    assert du.startswith("du-") and put.stderr.startswith(f"put {du}")
    qdu = pdata.json("put", str(query), "--store", "s1")
    assert qdu["name"] == "query.fa" and qdu["files"] == 1 and qdu["state"] == "Running"

    shown = pdata.json("show", "genome")
    assert shown["state"] == "Running" and shown["size"] == 45000 + 2700
    algorithm = default_checksum()  # blake3 where installed, else sha256
    assert {f["path"]: (f["algorithm"], f[algorithm]) for f in shown["files"]} == {
        "db/part1.fa": (algorithm, _digest(db / "part1.fa", algorithm)),
        "db/part2.fa": (algorithm, _digest(db / "part2.fa", algorithm))}
    assert (tmp_path / "s1" / du / "db" / "part1.fa").read_bytes() == (db / "part1.fa").read_bytes()
    human = pdata("show", du).stdout
    assert "db/part1.fa" in human and "s1" in human and "complete" in human

    got = pdata.json("get", du, str(tmp_path / "out"), "--file", "db/part2.fa")
    assert [Path(p).name for p in got["files"]] == ["part2.fa"]
    assert (tmp_path / "out" / "db" / "part2.fa").read_bytes() == (db / "part2.fa").read_bytes()
    assert not (tmp_path / "out" / "db" / "part1.fa").exists()

    pdata("replicate", du, "--to", "s2")
    assert pdata.json("show", du)["replicas"]["s2"]["status"] == "complete"
    assert pdata.json("verify", du) == {"id": du, "ok": True, "replicas": {"s1": [], "s2": []},
                                        "algorithms": [algorithm]}
    assert f"s2: ok ({algorithm})" in pdata("verify", du).stdout

    bad = tmp_path / "s2" / du / "db" / "part1.fa"
    bad.unlink()  # same file system: the replica may be a hard link of s1's file; replace, do not write through
    bad.write_bytes(b"corrupted")
    result = pdata("verify", du, code=1)
    assert "s1: ok" in result.stdout and "s2: 1 problem(s)" in result.stdout
    assert result.stderr.startswith(f"Error: DataUnit {du}: bad replica on s2")
    assert pdata.json("verify", du, "--store", "s1", code=0)["ok"] is True

    pdata("rm", du, "--store", "s2")
    pdata("mv", du, "--to", "s2")
    assert set(pdata.json("show", du)["replicas"]) == {"s2"}
    assert not (tmp_path / "s1" / du).exists()
    assert pdata.json("ls", "--store", "s2")[0]["id"] == du
    pdata("rm", du)
    assert not (tmp_path / "s2" / du).exists()
