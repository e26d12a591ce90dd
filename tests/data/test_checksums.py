"""The checksum algorithm of DataUnit files: chosen when files are added (blake3 where installed, else
sha256; xxh128 and sha256 on request), recorded per file, and used by every later check -- replication,
``verify``, an agent's fetch into its cache -- while DataUnits recorded with sha256 before there was a
choice keep verifying with the same cache key."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import transfer
from pilotdata.coordination import Coordination
from pilotdata.data import ReplicaManager, checksums, default_checksum, to_transfer_entries
from pilotdata.descriptions import DataUnitDescription
from pilotdata.errors import ChecksumMismatchError, DescriptionError, TransferError
from pilotdata.records import DUFile, du_entries, manifest_patch, replica_patch
from pilotdata.records import ReplicaStatus as RS
from pilotdata.services.pilot_data import PilotDataService
from pilotdata.session import Session
from pilotdata.states import Kind
from tests.agent.harness import AgentProcess, sh, submit, wait_final
from transfer.digests import available, new_hash

FAST = [a for a in ("blake3", "xxh128") if available(a)]
needs_fast = pytest.mark.skipif(len(FAST) < 2, reason="blake3 and xxhash are not installed (the fast-hash extra)")


def digest(data: bytes, algorithm: str) -> str:
    hasher = new_hash(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


@pytest.fixture
def pd(sqlite_session: Session, tmp_path: Path) -> str:
    return PilotDataService(session=sqlite_session).create_pilot({"service_url": str(tmp_path / "pd")}).get_url()


def upload(ops: ReplicaManager, pd: str, files: dict[str, bytes], directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    du = ops.register(DataUnitDescription(file_urls=tuple(str(directory / n) for n in files)))
    ops.upload(du, pd)
    return du


# ---------------------------------------------------------------------------------------------- the setting
@pytest.mark.parametrize(
    ("env", "installed", "expected"),
    [
        (None, True, "blake3"),            # the default where the fast-hash extra is installed
        (None, False, "sha256"),           # ... and without it: sha256, no error
        ("xxh128", True, "xxh128"),
        ("SHA256", False, "sha256"),       # sha256 is always there; any case
        (" blake3 ", True, "blake3"),
    ],
)
def test_default_algorithm(monkeypatch: pytest.MonkeyPatch, env: str | None, installed: bool,
                           expected: str) -> None:
    monkeypatch.setattr(checksums, "available", lambda name: name == "sha256" or installed)
    if env is None:
        monkeypatch.delenv("PDATA_CHECKSUM", raising=False)
    else:
        monkeypatch.setenv("PDATA_CHECKSUM", env)
    assert default_checksum() == expected


@pytest.mark.parametrize(
    ("value", "installed", "message"),
    [
        ("md5", True, r"PDATA_CHECKSUM: 'md5' is not a checksum algorithm; choose one of sha256, blake3, xxh128"),
        ("blake2", True, r"did you mean 'blake3'"),
        ("blake3", False, r"PDATA_CHECKSUM: blake3 needs the 'blake3' package.*pilot-data\[fast-hash\]"),
        ("xxh128", False, r"PDATA_CHECKSUM: xxh128 needs the 'xxhash' package"),
    ],
)
def test_a_bad_or_missing_algorithm_is_named_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, sqlite_session: Session, pd: str, tmp_path: Path, value: str,
    installed: bool, message: str,
) -> None:
    monkeypatch.setattr(checksums, "available", lambda name: name == "sha256" or installed)
    monkeypatch.setenv("PDATA_CHECKSUM", value)
    ops = ReplicaManager(sqlite_session.coord)
    (tmp_path / "a.txt").write_text("a")
    du = ops.register(DataUnitDescription(file_urls=(str(tmp_path / "a.txt"),)))
    with pytest.raises(DescriptionError, match=message):
        ops.upload(du, pd)
    assert ops.record(du).state == "New" and not (tmp_path / "pd" / du).exists()  # nothing changed
    with pytest.raises(DescriptionError, match=message.replace("PDATA_CHECKSUM", "checksum")):
        ReplicaManager(sqlite_session.coord, checksum=value)  # the library argument: at once


# ---------------------------------------------------------------------------------------------- recording
@pytest.mark.parametrize("algorithm", ["sha256", "blake3", "xxh128"])
def test_each_file_records_its_algorithm_and_is_checked_in_it(
    sqlite_session: Session, pd: str, tmp_path: Path, algorithm: str
) -> None:
    if not available(algorithm):
        pytest.skip(f"{algorithm} is not installed (the fast-hash extra)")
    ops = ReplicaManager(sqlite_session.coord, checksum=algorithm)
    files = {"a.bin": os.urandom(300_000), "b.txt": b"hello\n"}
    du = upload(ops, pd, files, tmp_path / "src")
    record = sqlite_session.coord.get(Kind.DU, du)
    assert {k: v for k, v in record.data.items() if k.startswith("file:")} == {
        f"file:{name}": {"size": len(data), algorithm: digest(data, algorithm)} for name, data in files.items()}
    assert ops.verify(du) == {pd: []}
    # a same-size corruption is found in the recorded algorithm, by verify and by a replication
    (tmp_path / "pd" / du / "a.bin").unlink()
    (tmp_path / "pd" / du / "a.bin").write_bytes(b"x" * 300_000)
    [problem] = ops.verify(du)[pd]
    assert problem.startswith(f"a.bin: {algorithm} is ") and digest(files["a.bin"], algorithm) in problem
    other = PilotDataService(session=sqlite_session).create_pilot({"service_url": str(tmp_path / "pd2")}).get_url()
    with pytest.raises(ChecksumMismatchError, match=f"{algorithm} of 'a.bin'"):
        ops.replicate(du, other)


def test_a_sha256_dataunit_of_before_keeps_verifying_with_the_same_cache_key(
    sqlite_session: Session, pd: str, tmp_path: Path
) -> None:
    """A record in the layout every DataUnit had before there was a choice: ``{"size", "sha256"}``."""
    coord = sqlite_session.coord
    data = os.urandom(100_000)
    (tmp_path / "pd" / "du-old").mkdir(parents=True)
    (tmp_path / "pd" / "du-old" / "db.fa").write_bytes(data)
    hexdigest = hashlib.sha256(data).hexdigest()
    coord.create(Kind.DU, "du-old", {"name": "old", "file:db.fa": {"size": len(data), "sha256": hexdigest},
                                     **replica_patch(pd, RS.COMPLETE)})
    assert du_entries(coord.get(Kind.DU, "du-old")) == [DUFile("db.fa", len(data), hexdigest, "sha256")]
    ops = ReplicaManager(coord)
    assert ops.verify("du-old") == {pd: []}
    # the cache key is what the agent computed before algorithms existed: sha256 over [path, size, hex]
    old_key = "du-old-" + hashlib.sha256(json.dumps([["db.fa", len(data), hexdigest]],
                                                    separators=(",", ":")).encode()).hexdigest()[:32]
    assert transfer.cache_key("du-old", to_transfer_entries(du_entries(coord.get(Kind.DU, "du-old")))) == old_key
    # files added now get today's algorithm; the old one keeps sha256
    (tmp_path / "new.txt").write_text("new\n")
    ops.add_local_files("du-old", [str(tmp_path / "new.txt")])
    algorithms = {e.path: e.algorithm for e in du_entries(coord.get(Kind.DU, "du-old"))}
    assert algorithms == {"db.fa": "sha256", "new.txt": default_checksum()}
    assert ops.verify("du-old") == {pd: []}


def test_an_algorithm_unknown_here_fails_the_copy_instead_of_skipping_the_check(
    sqlite_session: Session, pd: str, tmp_path: Path
) -> None:
    coord = sqlite_session.coord
    (tmp_path / "pd" / "du-new").mkdir(parents=True)
    (tmp_path / "pd" / "du-new" / "x").write_text("x")
    coord.create(Kind.DU, "du-new", {"file:x": {"size": 1, "sha3_512": "ab" * 64}, **replica_patch(pd, RS.COMPLETE)})
    [entry] = du_entries(coord.get(Kind.DU, "du-new"))  # listing still works
    assert (entry.algorithm, entry.size) == ("sha3_512", 1)
    with pytest.raises(TransferError, match=r"DataUnit file 'x': .*'sha3_512' is not one of sha256, blake3, xxh128"):
        ReplicaManager(coord).verify("du-new")


def test_manifest_patch_round_trips_every_algorithm() -> None:
    files = [DUFile("a", 1, "0" * 64, "sha256"), DUFile("b", 2, "1" * 64, "blake3"), DUFile("c", 3, "2" * 32, "xxh128")]
    assert manifest_patch(files) == {"file:a": {"size": 1, "sha256": "0" * 64},
                                     "file:b": {"size": 2, "blake3": "1" * 64},
                                     "file:c": {"size": 3, "xxh128": "2" * 32}}
    assert files[0].sha256 == "0" * 64 and files[1].sha256 is None and files[1].checksum == "blake3:" + "1" * 64


def test_a_manifest_entry_whose_library_is_missing_is_kept_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent without the fast-hash extra must fail a blake3 fetch with the install hint, never copy
    the file unchecked (the entry used to lose its checksum when the library was missing)."""
    import transfer.manifest

    monkeypatch.setattr(transfer.manifest, "available", lambda name: name == "sha256")
    entry = transfer.FileEntry.from_dict({"path": "a", "size": 1, "blake3": "1" * 64})
    assert (entry.algorithm, entry.digest) == ("blake3", "1" * 64)


# ---------------------------------------------------------------------------------------------- an agent's fetch
@needs_fast
def test_an_agent_fetches_and_checks_each_dataunit_in_its_recorded_algorithm(
    sqlite_session: Session, pd: str, tmp_path: Path
) -> None:
    coord: Coordination = sqlite_session.coord
    good: dict[str, str] = {}
    for algorithm in ("sha256", "blake3", "xxh128"):
        ops = ReplicaManager(coord, checksum=algorithm)
        good[algorithm] = upload(ops, pd, {"data.txt": algorithm.encode() * 1000}, tmp_path / f"src-{algorithm}")
    bad = upload(ReplicaManager(coord, checksum="blake3"), pd, {"data.txt": b"GOOD" * 1000}, tmp_path / "src-bad")
    (tmp_path / "pd" / bad / "data.txt").unlink()
    (tmp_path / "pd" / bad / "data.txt").write_bytes(b"EVIL" * 1000)  # same size: only the checksum tells
    coord.create(Kind.PILOT, "p-sum", {})
    for algorithm, du in good.items():
        submit(coord, f"cu-{algorithm}", sh("head -c 12 data.txt", input_data=[du]), pilot="p-sum")
    submit(coord, "cu-bad", sh("cat data.txt", input_data=[bad]), pilot="p-sum")
    agent = AgentProcess(sqlite_session.coord.url, sqlite_session.namespace, "p-sum", tmp_path / "work")
    try:
        for algorithm in good:
            cu = f"cu-{algorithm}"
            assert wait_final(coord, cu, 30, agent=agent) == "Done", coord.get(Kind.CU, cu)
        assert wait_final(coord, "cu-bad", 30, agent=agent) == "Failed"
        assert agent.terminate(30) == 0, agent.log
    finally:
        agent.stop()
    for algorithm in good:
        assert (tmp_path / "work" / f"cu-{algorithm}" / "stdout").read_text() == (algorithm * 12)[:12]
    reason = coord.get(Kind.CU, "cu-bad").data["reason"]
    assert "the manifest says" in reason and not (tmp_path / "work" / "cu-bad" / "stdout").exists()
    # the pilot cache holds each DataUnit with the manifest it was checked against, algorithm and all
    found: set[str] = set()
    for path in (tmp_path / "work").rglob("entries/*/manifest.json"):
        [entry] = json.loads(path.read_text())
        found |= set(entry) - {"path", "size"}
    assert found == {"sha256", "blake3", "xxh128"}


@pytest.mark.skipif(not available("blake3"), reason="blake3 is not installed (the fast-hash extra)")
def test_a_host_without_the_library_fails_the_copy_with_the_install_hint(
    sqlite_session: Session, pd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an agent (or a client) without the fast-hash extra does with a blake3 DataUnit: it refuses,
    naming the package, both from the record and from a pilot-cache manifest dict."""
    import sys

    ops = ReplicaManager(sqlite_session.coord, checksum="blake3")
    du = upload(ops, pd, {"a.txt": b"a" * 100}, tmp_path / "src")
    other = PilotDataService(session=sqlite_session).create_pilot({"service_url": str(tmp_path / "pd2")}).get_url()
    monkeypatch.setitem(sys.modules, "blake3", None)  # import blake3 now fails, as where it is not installed
    with pytest.raises(TransferError, match=r"blake3.*pip install 'pilot-data\[fast-hash\]'"):
        ops.replicate(du, other)
    entries = [e.to_dict() for e in to_transfer_entries(du_entries(ops.record(du)))]  # as the agent hands them on
    cache = transfer.PilotCache(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"pip install 'pilot-data\[fast-hash\]'"):
        cache.ensure("k", ops.store(pd).fs, ops.store(pd).path(du), entries)
    assert not cache.contains("k")
