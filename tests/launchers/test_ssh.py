"""ssh://: detached remote processes over a real sshd, with the host key verified."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, LaunchSpec, launcher_for
from pilotdata.launchers.ssh import SshLauncher
from tests.launchers.program import Program, process_gone
from tests.servers import SshServer, wait_until

SECRET_URL = "redis://:ssh-s3cret@127.0.0.1:6399/0"


def url(server: SshServer) -> str:
    return f"ssh://{server.user}@127.0.0.1:{server.port}"


def options(server: SshServer, **extra: Any) -> dict[str, Any]:
    return {
        "key_filename": str(server.key_file),
        "known_hosts": str(server.known_hosts),
        "python": sys.executable,
        "grace": 1.0,
        **extra,
    }


@pytest.fixture
def ssh(sshd_server: SshServer) -> Iterator[SshLauncher]:
    launcher = launcher_for(url(sshd_server), **options(sshd_server))
    assert isinstance(launcher, SshLauncher)
    yield launcher
    launcher.close()


def test_submit_status_done(ssh: SshLauncher, program: Program, tmp_path: Path) -> None:
    work = tmp_path / "remote-work"
    job = ssh.submit(
        LaunchSpec(
            pilot_id="s1",
            argv=program.argv("s1", hold=True, env="PDATA_URL"),
            working_directory=str(work),
            env={"PDATA_URL": SECRET_URL},
        )
    )
    wait_until(lambda: program.started("s1"), 15, "the remote program to start")
    assert program.started_text("s1") == SECRET_URL
    assert ssh.status([job])[job].state is JobState.RUNNING
    # the spec file that carried the secret was mode 600 and is gone; no command line shows it
    control = Path(job.split(":", 2)[2])
    assert control.is_dir() and not (control / "spawn.json").exists()
    for pid in (program.pid("s1"), int(job.split(":")[0])):
        assert "s3cret" not in Path(f"/proc/{pid}/cmdline").read_text()
    program.release("s1")
    status = wait_until(lambda: (s := ssh.status([job])[job]).is_final and s, 15, "the remote job to end")
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    assert "s1 finished" in (work / "s1.stdout").read_text()


def test_failed_and_canceled(ssh: SshLauncher, program: Program, tmp_path: Path) -> None:
    work = str(tmp_path / "w")
    failing = ssh.submit(LaunchSpec(pilot_id="s2", argv=program.argv("s2", exit_code=3), working_directory=work))
    held = ssh.submit(
        LaunchSpec(pilot_id="s3", argv=program.argv("s3", hold=True, grandchild=True), working_directory=work)
    )
    wait_until(lambda: program.started("s3"), 15, "the held program to start")
    ssh.cancel(held)
    wait_until(
        lambda: process_gone(program.pid("s3")) and process_gone(program.grandchild("s3")),
        10,
        "the remote process group to end",
    )
    answer = wait_until(
        lambda: (a := ssh.status([failing, held])) and all(s.is_final for s in a.values()) and a,
        15,
        "both jobs to end",
    )
    assert (answer[failing].state, answer[failing].exit_code) == (JobState.FAILED, 3)
    assert answer[held].state is JobState.CANCELED


def test_spec_file_is_mode_600_while_it_exists(sshd_server: SshServer, tmp_path: Path) -> None:
    from pilotdata.launchers._ssh import SshRunner

    runner = SshRunner(
        url(sshd_server), key_filename=str(sshd_server.key_file), known_hosts=str(sshd_server.known_hosts)
    )
    try:
        target = tmp_path / "sub" / "secret.env"
        runner.makedirs(str(target.parent))
        runner.write_file(str(target), "export X=1\n", mode=0o600)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert runner.read_file(str(target)) == "export X=1\n"
        assert runner.read_file(str(tmp_path / "missing")) is None
    finally:
        runner.close()


def test_unknown_host_key_is_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    launcher = launcher_for(url(sshd_server), **options(sshd_server, known_hosts=str(empty)))
    with pytest.raises(LaunchError, match="not in known_hosts") as info:
        launcher.submit(LaunchSpec(pilot_id="s4", argv=["true"], working_directory=str(tmp_path / "w4")))
    assert not (tmp_path / "w4").exists()
    # the message shows the server's real fingerprint (as ssh-keygen prints it) and how to add the key
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd_server.directory / "host_ed25519.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert listed.startswith("SHA256:") and listed in str(info.value)
    assert "ssh-keyscan" in str(info.value)


def test_changed_host_key_is_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = (tmp_path / "other_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_server.port} {kind} {key}\n")
    launcher = launcher_for(url(sshd_server), **options(sshd_server, known_hosts=str(known)))
    with pytest.raises(LaunchError, match="does not match"):
        launcher.status(["1:1:/x"])


def test_missing_known_hosts_file_is_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    launcher = launcher_for(url(sshd_server), **options(sshd_server, known_hosts=str(tmp_path / "nope")))
    with pytest.raises(LaunchError, match="does not exist"):
        launcher.status(["1:1:/x"])


def test_wrong_user_key_is_an_auth_error(sshd_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    launcher = launcher_for(url(sshd_server), **options(sshd_server, key_filename=str(key)))
    with pytest.raises(LaunchError, match="authentication failed"):
        launcher.status(["1:1:/x"])


HOW_TO_SET = ("name the interpreter that has pilot-data with the launcher option python: "
              "launcher_options={'python': '/path/to/venv/bin/python'} (PilotComputeService), "
              "create_pilot(..., python='/path/to/venv/bin/python'), or pdata pilot start ssh://")


def _launch_error(sshd_server: SshServer, tmp_path: Path, python: str) -> str:
    launcher = launcher_for(url(sshd_server), **options(sshd_server, python=python))
    with pytest.raises(LaunchError) as info:
        launcher.submit(LaunchSpec(pilot_id="s5", argv=["true"], working_directory=str(tmp_path / "w5")))
    assert not (tmp_path / "w5").exists()  # nothing was started or created
    return str(info.value)


def test_missing_python_is_named_with_how_to_set_it(sshd_server: SshServer, tmp_path: Path) -> None:
    message = _launch_error(sshd_server, tmp_path, "/nonexistent/python3")
    where = f"{sshd_server.user}@127.0.0.1:{sshd_server.port}"
    assert message.startswith(f"{url(sshd_server)}: the remote interpreter '/nonexistent/python3' was not found "
                              f"on {where} (SSH runs commands in a non-login shell: ")
    assert HOW_TO_SET in message and "--launcher-option python=/path/to/venv/bin/python" in message


def test_missing_package_names_the_interpreter_it_resolved_to(sshd_server: SshServer, tmp_path: Path) -> None:
    venv = tmp_path / "bare-venv"  # a real interpreter that lacks pilotdata
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    message = _launch_error(sshd_server, tmp_path, str(venv / "bin" / "python"))
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"'{venv}/bin/python' on {sshd_server.user}@127.0.0.1:{sshd_server.port} is " in message
    assert f"(Python {version}) and cannot import pilotdata: install it for that interpreter " in message
    assert HOW_TO_SET in message


def test_too_old_python_is_named(sshd_server: SshServer, tmp_path: Path) -> None:
    """An interpreter that answers like a Python 3.6 (whose import of pilotdata fails on its syntax)."""
    old = tmp_path / "python3.6"
    old.write_text("#!/bin/sh\necho /opt/old/bin/python3.6; echo 3.6.15\n"
                   "echo '  File \"pilotdata/__init__.py\"' >&2; echo 'SyntaxError: invalid syntax' >&2; exit 1\n")
    old.chmod(0o755)
    message = _launch_error(sshd_server, tmp_path, str(old))
    assert f"'{old}' on " in message and "is /opt/old/bin/python3.6 (Python 3.6.15), but pilot-data needs " \
                                          "Python 3.10 or newer; " in message
    assert HOW_TO_SET in message


def test_password_in_url_is_refused_without_echo(sshd_server: SshServer) -> None:
    with pytest.raises(LaunchError) as info:
        launcher_for(f"ssh://root:hunter2@127.0.0.1:{sshd_server.port}", **options(sshd_server))
    assert "hunter2" not in str(info.value)
    assert "key" in str(info.value)


def test_unknown_option_is_named(sshd_server: SshServer) -> None:
    with pytest.raises(LaunchError, match="did you mean 'known_hosts'"):
        launcher_for(url(sshd_server), know_hosts="/x")
