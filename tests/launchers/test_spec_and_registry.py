"""LaunchSpec validation, JobStatus, URL redaction and the scheme registry (no servers needed)."""

from __future__ import annotations

import pytest

import pilotdata.launchers as launchers
from pilotdata.errors import DescriptionError, LaunchError, UnknownSchemeError
from pilotdata.launchers import JobState, JobStatus, LaunchSpec, launcher_for, redact_url, supported_schemes
from pilotdata.launchers.batch import SCHEMES, BatchLauncher, Lsf, Pbs, Sge, Slurm
from pilotdata.launchers.fork import ForkLauncher
from pilotdata.launchers.ssh import SshLauncher


def make(**kw: object) -> LaunchSpec:
    base: dict[str, object] = {"pilot_id": "p1", "argv": ["true"], "working_directory": "/tmp/w"}
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pilot_id", "../evil"),
        ("pilot_id", ""),
        ("argv", []),
        ("argv", "python -m agent"),
        ("argv", ["ok", 3]),
        ("working_directory", ""),
        ("number_of_processes", 0),
        ("processes_per_node", 0),
        ("walltime_minutes", 0),
        ("walltime_minutes", True),
        ("queue", "two\nlines"),
        ("env", {"BAD-NAME": "x"}),
    ],
)
def test_bad_spec_names_the_field(field: str, value: object) -> None:
    with pytest.raises(DescriptionError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_env_value_errors_never_echo_the_value() -> None:
    with pytest.raises(DescriptionError) as info:
        make(env={"PDATA_URL": "redis://:pw-\0-secret@h"})
    assert "secret" not in str(info.value)
    assert "PDATA_URL" in str(info.value)


def test_ppn_cannot_exceed_processes() -> None:
    with pytest.raises(DescriptionError, match="processes_per_node"):
        make(number_of_processes=2, processes_per_node=4)


def test_output_paths_and_control_directory() -> None:
    spec = make(stdout="logs/out.txt", stderr="/abs/err.txt")
    assert spec.output_paths("/w") == ("/w/logs/out.txt", "/abs/err.txt")
    assert make().output_paths("/w/") == ("/w/p1.stdout", "/w/p1.stderr")
    first, second = spec.control_directory("/w"), spec.control_directory("/w")
    assert first.startswith("/w/.pdata-launch/p1-") and first != second


def test_from_bigjob_description() -> None:
    spec = LaunchSpec.from_description(
        "p2",
        ["python", "-m", "agent"],
        {
            "service_url": "slurm://localhost",
            "number_of_processes": 8,
            "processes_per_node": 4,
            "walltime": 30,
            "queue": "normal",
            "project": "TG-123",
            "working_directory": "/scratch/u",
        },
        env={"PDATA_NAMESPACE": "ns"},
    )
    assert (spec.number_of_processes, spec.processes_per_node, spec.walltime_minutes) == (8, 4, 30)
    assert (spec.queue, spec.project, spec.working_directory) == ("normal", "TG-123", "/scratch/u")
    assert spec.env == {"PDATA_NAMESPACE": "ns"}
    defaulted = LaunchSpec.from_description("p3", ["a"], {}, default_working_directory="/home/u")
    assert (defaulted.working_directory, defaulted.number_of_processes) == ("/home/u", 1)


def test_job_status_helpers() -> None:
    assert JobStatus.from_exit_code(0) == JobStatus(JobState.DONE, 0, None)
    assert JobStatus.from_exit_code(3).state is JobState.FAILED
    killed = JobStatus.from_exit_code(-9)
    assert killed.state is JobState.FAILED and "SIGKILL" in (killed.reason or "")
    assert JobStatus.from_exit_code(-15, canceled=True).state is JobState.CANCELED
    for status in (killed, JobStatus(JobState.PENDING)):
        assert JobStatus.from_dict(status.to_dict()) == status
    assert JobStatus.from_dict({"state": "weird"}).state is JobState.UNKNOWN
    assert {s for s in JobState if JobStatus(s).is_final} == {
        JobState.DONE,
        JobState.FAILED,
        JobState.CANCELED,
    }


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("ssh://u:pw@host") == "ssh://u:***@host"
    assert redact_url("ssh://u@host:2222") == "ssh://u@host:2222"


def test_registry_maps_schemes_to_classes() -> None:
    # subprocess: BigJob's later name for fork
    batch = [f"{base}{ssh}" for base in ("lsf", "pbs", "pbspro", "sge", "slurm", "torque") for ssh in ("", "+ssh")]
    assert supported_schemes() == sorted(["fork", "ssh", "subprocess", *batch])
    assert isinstance(launcher_for("fork://localhost"), ForkLauncher)
    assert isinstance(launcher_for("ssh://u@127.0.0.1:1"), SshLauncher)
    assert set(batch) == set(SCHEMES)  # the lazy registry and the batch layer name the same schemes
    systems = {"slurm": Slurm, "pbs": Pbs, "torque": Pbs, "pbspro": Pbs, "sge": Sge, "lsf": Lsf}
    for scheme in batch:  # one launcher class, parameterized by the batch system
        url = f"{scheme}://u@127.0.0.1:1" if scheme.endswith("+ssh") else f"{scheme}://localhost"
        launcher = launcher_for(url)  # +ssh connects on first use
        assert isinstance(launcher, BatchLauncher)
        assert type(launcher.system) is systems[scheme.removesuffix("+ssh")]
    assert launcher_for("pbspro://localhost").system.flavor == "pro"  # type: ignore[attr-defined]
    assert launcher_for("torque+ssh://u@h").system.flavor == "torque"  # type: ignore[attr-defined]


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        launcher_for("slrum://localhost")
    message = str(info.value)
    assert "did you mean 'slurm'" in message
    for scheme in supported_schemes():
        assert scheme in message
    with pytest.raises(UnknownSchemeError, match="has no scheme"):
        launcher_for("localhost")


def test_scheme_errors_never_show_a_password() -> None:
    with pytest.raises(UnknownSchemeError) as info:
        launcher_for("pbz://user:topsecret@host")
    assert "topsecret" not in str(info.value)
    with pytest.raises(LaunchError) as launch:
        launcher_for("pbs://user:topsecret@host")  # pbs:// is this host's client: the error names the URL
    assert "topsecret" not in str(launch.value) and "pbs://user:***@host" in str(launch.value)


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("condor://localhost", "HTCondor pools"),
        ("condorg://localhost", "HTCondor-G"),
        ("ec2+ssh://aws.amazon.com", "Amazon EC2 virtual machines"),
        ("nova+ssh://cloud.example.org", "OpenStack Nova virtual machines"),
        ("gce+ssh://", "Google Compute Engine virtual machines"),
    ],
)
def test_bigjob_schemes_without_a_launcher_say_so(url: str, what: str) -> None:
    scheme = url.split("://")[0]
    with pytest.raises(UnknownSchemeError) as info:
        launcher_for(url)
    message = str(info.value)
    assert message.startswith(f"no launcher for scheme {scheme!r} ({what}: designed, not built")
    assert "docs/resources.md" in message
    assert "; supported: fork, lsf, lsf+ssh, pbs, pbs+ssh," in message


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(LaunchError, match="did you mean 'grace'"):
        launcher_for("fork://localhost", grac=2)


def test_register_launcher_and_public_api() -> None:
    launchers.register_launcher("local", "pilotdata.launchers.fork:ForkLauncher")
    try:
        with pytest.raises(LaunchError, match="fork runs on this host only"):
            launcher_for("local://localhost")  # ForkLauncher itself insists on fork://
    finally:
        launchers._REGISTRY.pop("local")
    assert set(launchers.__all__) == {
        "FINAL_JOB_STATES",
        "NOT_BUILT",
        "JobState",
        "JobStatus",
        "LaunchSpec",
        "Launcher",
        "launcher_class",
        "launcher_for",
        "redact_url",
        "register_launcher",
        "supported_schemes",
    }
