"""lsf:// and lsf+ssh:// command plumbing, with bsub/bjobs/bkill replaying recorded answers.

No LSF can run on this machine, so these commands are not LSF: small scripts that record how they
were called (arguments, standard input) and print answers in LSF's formats. They prove what the
launcher sends (the job script on bsub's standard input, where LSF reads ``#BSUB`` lines; one
bjobs for a batch of ids; bkill) and how it reads the answers. The script itself and the parsers
are in ``test_batch_scripts.py`` and ``test_batch_parsers.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pilotdata.errors import LaunchError
from pilotdata.launchers import JobState, LaunchSpec, launcher_for
from pilotdata.launchers.batch import BatchLauncher, Lsf
from tests.servers import SshServer

REPLAY = {
    "bsub": """cat > "$LSF_REPLAY/bsub.stdin"
echo "bsub $*" >> "$LSF_REPLAY/calls"
echo "Job <4242> is submitted to queue <normal>."
""",
    "bjobs": """echo "bjobs $*" >> "$LSF_REPLAY/calls"
for id in "$@"; do
  case "$id" in -*|*" "*|*"|"*) continue;; esac
  line=$(grep "^$id|" "$LSF_REPLAY/bjobs.out" 2>/dev/null) && echo "$line" || echo "Job <$id> is not found" >&2
done
""",
    "bkill": """echo "bkill $*" >> "$LSF_REPLAY/calls"
if grep -q "^$1|\\(DONE\\|EXIT\\)" "$LSF_REPLAY/bjobs.out"; then
  echo "Job <$1>: Job has already finished" >&2; exit 255
fi
echo "Job <$1> is being terminated"
""",
}


@pytest.fixture
def replay(tmp_path: Path) -> Path:
    """A bin directory with the replaying bsub/bjobs/bkill; their records go to ``replay/``."""
    bindir, records = tmp_path / "bin", tmp_path / "replay"
    bindir.mkdir()
    records.mkdir()
    for name, body in REPLAY.items():
        script = bindir / name
        script.write_text(f"#!/bin/sh\nLSF_REPLAY={records}\n{body}")
        script.chmod(0o755)
    return bindir


def answer(replay: Path, text: str) -> None:
    (replay.parent / "replay" / "bjobs.out").write_text(text)


def calls(replay: Path) -> list[str]:
    return (replay.parent / "replay" / "calls").read_text().splitlines()


def lsf(replay: Path) -> BatchLauncher:
    launcher = launcher_for("lsf://localhost", env={"PATH": f"{replay}:/usr/bin:/bin"})
    assert isinstance(launcher, BatchLauncher) and isinstance(launcher.system, Lsf)
    return launcher


def test_submit_sends_the_script_on_standard_input(replay: Path, tmp_path: Path) -> None:
    spec = LaunchSpec(pilot_id="pilot-9", argv=["python3", "-m", "agent"], working_directory=str(tmp_path / "w"),
                      env={"PDATA_URL": "redis://:lsf-s3cret@h/0"}, number_of_processes=4, processes_per_node=2,
                      walltime_minutes=30, queue="normal", project="P1")
    job = lsf(replay).submit(spec)
    assert job == "4242"
    sent = (replay.parent / "replay" / "bsub.stdin").read_text()
    assert sent.startswith("#!/bin/bash\n#BSUB -J pilot-9\n")
    assert '#BSUB -R "span[ptile=2]"' in sent and "#BSUB -W 0:30" in sent and "#BSUB -P P1" in sent
    assert "s3cret" not in sent
    assert calls(replay) == ["bsub "]  # nothing on the command line: every option is in the script
    control = next((tmp_path / "w" / ".pdata-launch").iterdir())
    assert stat.S_IMODE((control / "env").stat().st_mode) == 0o600


def test_status_is_one_bjobs_for_the_batch(replay: Path) -> None:
    answer(replay, "11|RUN|-\n12|PEND|-\n13|DONE|-\n14|EXIT|2\n")
    launcher = lsf(replay)
    got = launcher.status(["11", "12", "13", "14", "15", "x"])
    assert [got[i].state for i in ("11", "12", "13", "14", "15", "x")] == [
        JobState.RUNNING, JobState.PENDING, JobState.DONE, JobState.FAILED, JobState.UNKNOWN, JobState.UNKNOWN,
    ]
    assert got["14"].exit_code == 2
    assert calls(replay) == ["bjobs -a -noheader -o jobid stat exit_code delimiter='|' 11 12 13 14 15"]
    launcher.status(["13", "14"])  # final states are cached: no second bjobs
    assert len(calls(replay)) == 1


def test_cancel_with_bkill(replay: Path) -> None:
    answer(replay, "21|RUN|-\n22|DONE|-\n")
    launcher = lsf(replay)
    launcher.cancel("21")
    answer(replay, "21|EXIT|130\n22|DONE|-\n")  # bkill's SIGINT: 128 + 2
    status = launcher.status(["21"])["21"]
    assert (status.state, status.exit_code) == (JobState.CANCELED, -2)
    launcher.cancel("22")  # "Job has already finished": no error
    assert launcher.status(["22"])["22"].state is JobState.DONE
    assert calls(replay)[0] == "bkill 21"
    with pytest.raises(LaunchError, match="not a LSF job id"):
        launcher.cancel("21;rm -rf /")


def test_missing_bsub_is_named(tmp_path: Path) -> None:
    launcher = launcher_for("lsf://localhost", env={"PATH": "/nonexistent"})
    spec = LaunchSpec(pilot_id="p", argv=["true"], working_directory=str(tmp_path / "w"))
    with pytest.raises(LaunchError, match="bsub not found on this host"):
        launcher.submit(spec)


def test_lsf_over_ssh(replay: Path, sshd_server: SshServer, tmp_path: Path) -> None:
    answer(replay, "4242|DONE|-\n")
    launcher = launcher_for(
        f"lsf+ssh://{sshd_server.user}@127.0.0.1:{sshd_server.port}",
        env={"PATH": f"{replay}:/usr/bin:/bin"},
        key_filename=str(sshd_server.key_file),
        known_hosts=str(sshd_server.known_hosts),
    )
    try:
        job = launcher.submit(LaunchSpec(pilot_id="s9", argv=["true"], working_directory=str(tmp_path / "w")))
        assert launcher.status([job])[job].state is JobState.DONE
        assert (replay.parent / "replay" / "bsub.stdin").read_text().startswith("#!/bin/bash\n#BSUB -J pilot-s9\n")
    finally:
        launcher.close()
