"""pdata's frame: settings (flags > environment > config file > default), errors, exit codes, completion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilotdata.cli import exit_code_for
from pilotdata.cli.settings import ConfigError, config_path, load_config
from pilotdata.errors import (
    CoordinationError,
    DescriptionError,
    NotFoundError,
    TimeoutExpired,
    TransferError,
    UnknownSchemeError,
)
from tests.cli.conftest import Pdata, run_pdata, snapshot


def test_help_version_and_every_command_has_help(pdata: Pdata) -> None:
    out = pdata("--help").stdout
    for name in ("store", "put", "pilot", "submit", "wait", "report", "history", "agent", "explain"):
        assert f"  {name} " in out
    assert "PDATA_URL" in out and "_PDATA_COMPLETE=bash_source pdata" in out
    assert pdata("--version").stdout.strip() == "pdata 0.1.0"
    for args in (["store", "add"], ["pilot", "start"], ["submit"], ["wait"], ["report"], ["history"],
                 ["config", "show"], ["verify"], ["get"], ["logs"]):
        assert "Usage: pdata " + " ".join(args) in pdata(*args, "--help").stdout


def test_defaults_env_flag_and_config_file_precedence(pdata: Pdata, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["PDATA_HOME"])
    monkeypatch.delenv("PDATA_NAMESPACE")
    shown = pdata.json("config", "show")
    assert shown["url"] == {"value": f"sqlite:///{home / 'coordination.sqlite'}", "source": "default"}
    assert shown["namespace"] == {"value": "default", "source": "default"}
    assert shown["config_file"] == {"value": str(home / "config.toml"), "source": "absent"}
    assert config_path() == home / "config.toml"

    (home / "config.toml").write_text('# project settings\nnamespace = "from-file"\n'
                                      f'url = "sqlite:///{tmp_path / "file.sqlite"}"\n')
    shown = pdata.json("config", "show")
    assert shown["namespace"] == {"value": "from-file", "source": "config file"}
    assert shown["url"]["source"] == "config file"
    monkeypatch.setenv("PDATA_NAMESPACE", "from-env")
    assert pdata.json("config", "show")["namespace"] == {"value": "from-env", "source": "environment"}
    shown = pdata.json("--namespace", "from-flag", "config", "show")
    assert shown["namespace"] == {"value": "from-flag", "source": "flag"}
    assert shown["url"]["source"] == "config file"

    # the settings really select where things go: a store added lands in the file's URL + the flag's namespace
    pdata("--namespace", "from-flag", "store", "add", "s1", str(tmp_path / "st"))
    assert list(snapshot(f"sqlite:///{tmp_path / 'file.sqlite'}", "from-flag")["pd"]) == ["s1"]
    assert snapshot(f"sqlite:///{tmp_path / 'file.sqlite'}", "from-env")["pd"] == {}
    assert pdata("config", "path").stdout.strip() == str(home / "config.toml")


def test_explicit_config_file_and_bad_config(pdata: Pdata, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PDATA_NAMESPACE")
    cfg = tmp_path / "other.toml"
    cfg.write_text('namespace = "explicit"\n')
    assert pdata.json("--config", str(cfg), "config", "show")["namespace"]["value"] == "explicit"
    assert "missing.toml' does not exist" in pdata.error("--config", str(tmp_path / "missing.toml"), "store", "ls")
    cfg.write_text('urll = "sqlite:///x"\n')
    line = pdata.error("--config", str(cfg), "store", "ls")
    assert "unknown key 'urll'" in line and "did you mean 'url'" in line
    cfg.write_text("url = [1, 2\n")
    assert "other.toml" in pdata.error("--config", str(cfg), "store", "ls")
    cfg.write_text("namespace = 3\n")
    assert "namespace must be a non-empty string" in pdata.error("--config", str(cfg), "store", "ls")


def test_config_file_is_read_as_toml(tmp_path: Path) -> None:
    """Escapes, literal strings and comments read as TOML says, on every supported Python (tomli on 3.10);
    a table or a key set twice is an error naming the file or the key."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('# comment\n\nurl = "redis://:p\\"w@host:6379/0"  # trailing\n'
                   "namespace = 'literal \\n kept'\nhistory_url=\"sqlite:///a b\"\n")
    assert load_config(cfg) == {"url": 'redis://:p"w@host:6379/0', "namespace": "literal \\n kept",
                                "history_url": "sqlite:///a b"}
    cfg.write_text("[section]\n")
    with pytest.raises(ConfigError, match="unknown key 'section'"):
        load_config(cfg)
    cfg.write_text('url = "a"\nurl = "b"\n')
    with pytest.raises(ConfigError, match=r"c\.toml"):
        load_config(cfg)


def test_load_config_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('url = "redis://:pw@h/0"\nnamespace = "n"\n')
    assert load_config(cfg) == {"url": "redis://:pw@h/0", "namespace": "n"}
    with pytest.raises(ConfigError, match=r"nope\.toml.*No such file"):
        load_config(tmp_path / "nope.toml")


def test_exit_code_mapping() -> None:
    assert exit_code_for(NotFoundError("DataUnit 'x' does not exist")) == 2
    assert exit_code_for(DescriptionError("bad", field="x")) == 2
    assert exit_code_for(UnknownSchemeError("gram")) == 2
    assert exit_code_for(TransferError("copy failed")) == 1
    assert exit_code_for(CoordinationError("down")) == 1
    assert exit_code_for(TimeoutExpired("late")) == 1


def test_usage_errors_are_one_line_with_exit_2(pdata: Pdata) -> None:
    assert pdata(code=2).stderr.startswith("Usage: pdata [OPTIONS] COMMAND [ARGS]...\n")  # bare: the help
    assert pdata("pilot", code=2).stderr.startswith("Usage: pdata pilot [OPTIONS] COMMAND [ARGS]...\n")
    assert "No such command 'nope'" in pdata.error("nope")
    line = pdata.error("store", "add", "s1", "/tmp/x", "--size", "ten")
    assert "--size" in line and "'ten'" in line and "pdata store add --help" in line
    assert "--url" in pdata.error("--url")  # option needs a value
    line = pdata.error("--url", "gram://old.grid/x", "store", "ls")
    assert "gram" in line


def test_debug_shows_the_traceback(pdata: Pdata) -> None:
    result = pdata("--debug", "show", "du-missing", code=2)
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == "Error: DataUnit 'du-missing' does not exist"
    assert "Traceback" not in pdata("show", "du-missing", code=2).stderr


def test_bash_completion_script_and_completions() -> None:
    env = {**os.environ, "_PDATA_COMPLETE": "bash_source"}
    script = run_pdata([], env=env)
    assert script.returncode == 0 and "_pdata_completion" in script.stdout
    env = {**os.environ, "_PDATA_COMPLETE": "bash_complete", "COMP_WORDS": "pdata pil", "COMP_CWORD": "1"}
    assert "pilot" in _completions(env)
    env.update(COMP_WORDS="pdata pilot ", COMP_CWORD="2")
    assert {"start", "ls", "show", "stop"} <= set(_completions(env))


def _completions(env: dict[str, str]) -> list[str]:
    """The words bash would offer (click prints ``type,value`` lines)."""
    out = run_pdata([], env=env)
    assert out.returncode == 0, out.stderr
    return [line.split(",", 1)[1] for line in out.stdout.splitlines()]


def test_byte_progress_follows_deltas_and_never_goes_back() -> None:
    """The transfer engine reports ``(bytes_delta, files_done)``; a retry takes bytes back (negative delta)."""
    from pilotdata.cli.output import _ByteBar

    bar = _ByteBar("put", 140, enabled=True)
    try:
        shown = []
        for delta in (60, 40, -30, 20, 50):
            bar(delta, 0)
            shown.append(bar._shown)
        assert shown == [60, 100, 100, 100, 140] and bar._bar.length == 140
    finally:
        bar.close()
    off = _ByteBar("put", 10, enabled=False)
    off(10, 1)
    assert off._bar is None
