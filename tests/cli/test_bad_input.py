"""Bad input to ``pdata``: each is one clear error naming the field and the value, exit status 2, and
coordination is exactly as it was before (the snapshot of every entity, queue and event)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Pdata, snapshot


@pytest.fixture
def ready(pdata: Pdata, tmp_path: Path) -> str:
    """A store and a DataUnit (so the bad inputs meet a namespace that has things in it); the DU id."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f.txt").write_text("data\n")
    pdata("store", "add", "good", str(tmp_path / "pd"))
    return pdata("put", str(tmp_path / "in" / "f.txt"), "--name", "du").stdout.strip()


@pytest.mark.parametrize(("args", "names"), [
    (["submit", "--cores", "99999999999999999999", "--", "/bin/true"],
     ["number_of_processes", "99999999999999999999"]),
    (["submit", "--name", "x" * 100_000, "--", "/bin/true"], ["name", "100000 characters"]),
    (["submit", "--input", "du-does-not-exist", "--", "/bin/true"], ["--input", "du-does-not-exist"]),
    (["store", "add", "../evil", "{tmp}/pd-evil"], ["name", "'../evil'"]),
    (["store", "add", "s2", "{tmp}/pd-2", "--option", "auto_mkdir=maybe"], ["auto_mkdir", "'maybe'"]),
    (["put", "{tmp}/in/f.txt", "--name", ""], ["name", "''"]),
    (["--namespace", "", "store", "ls"], ["namespace", "''"]),
    (["--namespace", "a}b", "store", "ls"], ["namespace", "'a}b'"]),
    (["get", "{du}", "{tmp}/in/f.txt"], ["DEST", "f.txt", "not a directory"]),
], ids=["cores", "long-name", "missing-du", "store-name", "option-type", "empty-du-name", "empty-namespace",
        "brace-namespace", "get-onto-a-file"])
def test_bad_input_is_one_clear_error_with_exit_2_and_changes_nothing(
    pdata: Pdata, ready: str, tmp_path: Path, args: list[str], names: list[str]
) -> None:
    before = snapshot()
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{du}", ready) for a in args]
    error = pdata.error(*argv)
    for name in names:
        assert name in error, error
    assert len(error) < 400
    assert snapshot() == before
    assert not (tmp_path / "pd-evil").exists() and not (tmp_path / "pd-2").exists()
    assert (tmp_path / "in" / "f.txt").read_text() == "data\n"


def test_the_backends_agree_on_namespaces(pdata: Pdata, tmp_path: Path, redis_url: str) -> None:
    """``a}b`` was accepted on SQLite and refused on Redis: both refuse it now, with the same message."""
    sqlite_error = pdata.error("--url", f"sqlite:///{tmp_path / 'c.sqlite'}", "--namespace", "a}b", "store", "ls")
    redis_error = pdata.error("--url", redis_url, "--namespace", "a}b", "store", "ls")
    assert sqlite_error == redis_error and "namespace" in sqlite_error
    assert pdata("--url", redis_url, "--namespace", "a-b.c:1", "store", "ls").exit_code == 0


@pytest.fixture
def redis_url(redis_server: object) -> str:
    from tests import servers

    assert isinstance(redis_server, servers.RedisServer)
    return redis_server.url
