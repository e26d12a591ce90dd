"""BigJob-style scripts on the other resources: an ssh:// pilot (real sshd), a slurm:// pilot (real
single-node SLURM), an S3 PilotData on moto_server given BigJob's ``access_key_id`` /
``secret_access_key`` (which never reach coordination, history or a CU), ``file_transfer`` from ssh://
and s3:// URLs, and BigJob's schemes that have no launcher here.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pilotdata import PilotComputeService
from pilotdata.errors import UnknownSchemeError
from pilotdata.history import History, HistoryWriter
from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, lines_with
from tests.servers import MotoServer, SshServer, redis_dump
from tests.slurm_harness import SlurmCluster, start_slurm

# -------------------------------------------------------------------------------------- ssh pilot

SSH_PILOT = '''
    import json, os
    import pilotdata as pilot

    pilot_compute_service = pilot.PilotComputeService(os.environ["COORDINATION_URL"],
                                                      launcher_options=json.loads(os.environ["SSH_OPTIONS"]))
    def start(working_directory):
        pilot_description = pilot.PilotComputeDescription()
        pilot_description.service_url = os.environ["SSH_URL"]
        pilot_description.number_of_processes = 2
        pilot_description.walltime = 10
        pilot_description.working_directory = working_directory   # "" leaves it to the default
        return pilot_compute_service.create_pilot(pilot_description)

    jobs = {"default": start(""), "relative": start(os.environ["RELATIVE_WD"])}
    for kind, pilotjob in jobs.items():
        tasks = []
        for i in range(2):
            task_desc = pilot.ComputeUnitDescription()
            task_desc.executable = "/bin/echo"
            task_desc.arguments = ["$KIND task $TASK_NO on", "`hostname`"]
            task_desc.environment = {"TASK_NO": i, "KIND": kind}
            task_desc.output = "stdout.txt"
            tasks.append(pilotjob.submit_compute_unit(task_desc))
        print("PILOT", kind, pilotjob.get_url(), pilotjob.wait(timeout=120))
        for t in tasks:
            print("TASK", kind, t.get_state(), t.get_local_working_directory())
    pilot_compute_service.cancel()
'''


@pytest.fixture
def remote_home() -> Iterator[Path]:
    """The ssh user's (root's) home; the pilot directories a test makes there are removed after it."""
    home = Path(pwd.getpwnam("root").pw_dir)
    before = set((home / ".pilot-data" / "pilots").glob("*")) if (home / ".pilot-data").exists() else set()
    yield home
    for path in set((home / ".pilot-data" / "pilots").glob("*")) - before:
        shutil.rmtree(path, ignore_errors=True)


def test_ssh_pilot_sandboxes_are_in_its_working_directory_once(
    bj_sqlite: ScriptEnv, sshd_server: SshServer, remote_home: Path
) -> None:
    """BigJob script on ssh://; a default (and a relative) working directory is applied once, not twice."""
    relative = f"pd-test-{uuid.uuid4().hex[:8]}"
    options = {"known_hosts": str(sshd_server.known_hosts), "key_filename": str(sshd_server.key_file),
               "python": sys.executable}  # the remote side is this machine: this environment's Python
    try:
        out = bj_sqlite.run(SSH_PILOT, SSH_URL=f"ssh://root@127.0.0.1:{sshd_server.port}",
                            SSH_OPTIONS=json.dumps(options), RELATIVE_WD=relative)
        pilots = {kind: pid for kind, pid, _state in (line.split() for line in lines_with("PILOT", out))}
        rows = [line.split() for line in lines_with("TASK", out)]
        reasons = [cu.data.get("reason") for cu in bj_sqlite.records(Kind.CU)]
        assert [r[1] for r in rows] == ["Done"] * 4, reasons
        expected_parent = {"default": remote_home / ".pilot-data" / "pilots" / pilots["default"],
                           "relative": remote_home / relative}
        host = os.uname().nodename
        for kind, _state, directory in rows:
            sandbox = Path(directory)
            assert sandbox.parent == expected_parent[kind], directory  # not <workdir>/<workdir>/<cu>
            assert (sandbox / "stdout.txt").read_text() in (f"{kind} task 0 on {host}\n", f"{kind} task 1 on {host}\n")
    finally:
        shutil.rmtree(remote_home / relative, ignore_errors=True)


# ------------------------------------------------------------------------------------ slurm pilot

@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


SLURM_PILOT = '''
    import os
    import pilotdata as pilot

    pilot_description = pilot.PilotComputeDescription()
    pilot_description.service_url = "slurm://localhost"
    pilot_description.queue = os.environ["QUEUE"]
    pilot_description.allocation = ""            # BigJob's name for the project; unused here
    pilot_description.number_of_processes = 2
    pilot_description.walltime = 5
    pilot_description.working_directory = os.path.join(os.getcwd(), "agent")
    pilot_compute_service = pilot.PilotComputeService(os.environ["COORDINATION_URL"])
    pilotjob = pilot_compute_service.create_pilot(pilot_description)
    tasks = []
    for i in range(3):
        task_desc = pilot.ComputeUnitDescription()
        task_desc.executable = "/bin/sh"
        task_desc.arguments = ["-c", "'echo task $TASK_NO in job $SLURM_JOB_ID'"]
        task_desc.environment = {"TASK_NO": i}
        task_desc.output = "stdout.txt"
        tasks.append(pilotjob.submit_compute_unit(task_desc))
    print("PILOT", pilotjob.wait(timeout=120))
    for t in tasks:
        print("TASK", t.get_state(), t.get_local_working_directory())
    pilotjob.cancel()
    print("JOB", pilotjob.get_details()["launcher"]["job_id"])
'''


def test_slurm_pilot_runs_a_bigjob_ensemble(bj_sqlite: ScriptEnv, slurm: SlurmCluster) -> None:
    bj_sqlite.extra_env.update(slurm.env())  # the script's sbatch and squeue talk to this cluster
    out = bj_sqlite.run(SLURM_PILOT, QUEUE=slurm.partition)
    (job,) = lines_with("JOB", out)
    rows = [line.split() for line in lines_with("TASK", out)]
    assert [state for state, _ in rows] == ["Done"] * 3
    texts = [(Path(d) / "stdout.txt").read_text() for _, d in rows]
    assert texts == [f"task {i} in job {job}\n" for i in range(3)]
    assert all(Path(d).parent == bj_sqlite.work / "agent" for _, d in rows)


# ------------------------------------------------------------------------------- S3 PilotData

S3_SCRIPT = '''
    import json, os
    from pilotdata import PilotComputeService, PilotDataService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    with open(os.environ["CREDENTIALS_FILE"]) as f:   # not in the environment: the pilot inherits that
        CREDENTIALS = json.load(f)
    with open("test.txt", "w") as f:
        f.write("from the S3 PilotData\\n")
    pilot_data_service = PilotDataService(coordination_url=COORDINATION_URL)
    pd = pilot_data_service.create_pilot(pilot_data_description={
        "service_url": "s3://%s/pilot-data" % os.environ["BUCKET"],
        "size": 100,
        "access_key_id": CREDENTIALS["key_id"],
        "secret_access_key": CREDENTIALS["secret"],
        "affinity_datacenter_label": "cloud",
    })
    input_data_unit = pd.submit_data_unit({"file_urls": [os.path.join(os.getcwd(), "test.txt")]})
    input_data_unit.wait()
    output_data_unit = pd.submit_data_unit({"file_urls": []})
    output_data_unit.wait()

    pilot_compute_service = PilotComputeService(coordination_url=COORDINATION_URL)
    pilot_compute_service.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                                        "affinity_datacenter_label": "cloud"})
    compute_data_service = ComputeDataService()
    compute_data_service.add_pilot_compute_service(pilot_compute_service)
    compute_data_service.add_pilot_data_service(pilot_data_service)
    compute_unit = compute_data_service.submit_compute_unit({
        "executable": "/bin/cat",
        "arguments": ["test.txt", "remote.txt", ";", "env"],
        "input_data": [input_data_unit.get_url()],
        "file_transfer": ["s3://%s/extra/remote.txt > remote.txt" % os.environ["BUCKET"]],
        "output": "stdout.txt",
        "error": "stderr.txt",
        "output_data": [{output_data_unit.get_url(): ["std*"]}],
    })
    compute_data_service.wait()
    output_data_unit.export(os.path.join(os.getcwd(), "output"))
    print("CU", compute_unit.get_state(), compute_unit.get_details()["reason"])
    print("LIST", json.dumps(output_data_unit.list()))
    compute_data_service.cancel()
    pilot_data_service.cancel()
    pilot_compute_service.cancel()
'''


def test_s3_pilot_data_with_bigjob_credentials_keeps_them_out_of_everything(
    bj: ScriptEnv, moto_server: MotoServer, tmp_path: Path
) -> None:
    bucket = "bj-" + uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="extra/remote.txt", Body=b"fetched from s3\n")
    key_id, secret = "AKID" + uuid.uuid4().hex[:16].upper(), "sEcReT-" + uuid.uuid4().hex
    # the script signs with BigJob's keys from its description; the agent with its own AWS profile
    # (moto takes any credentials, so the test is about where the description's end up: nowhere)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"key_id": key_id, "secret": secret}))
    profile = tmp_path / "aws-credentials"
    profile.write_text("[default]\naws_access_key_id = agentkey\naws_secret_access_key = agentsecret\n")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(os.environ)
    out = bj.run(S3_SCRIPT, BUCKET=bucket, CREDENTIALS_FILE=str(credentials),
                 AWS_ENDPOINT_URL=moto_server.endpoint_url, AWS_DEFAULT_REGION="us-east-1",
                 AWS_SHARED_CREDENTIALS_FILE=str(profile), AWS_CONFIG_FILE=str(tmp_path / "none"))
    assert lines_with("CU", out) == ["Done None"]
    stdout = (bj.work / "output" / "stdout.txt").read_text()
    assert stdout.startswith("from the S3 PilotData\nfetched from s3\n")
    listing = json.loads(lines_with("LIST", out)[0])
    assert sorted(listing) == ["stderr.txt", "stdout.txt"]
    assert all(u.startswith(f"s3://{bucket}/pilot-data/") for u in listing["stdout.txt"]["pilot_data"])
    # the secret (and the key id) were never written anywhere: coordination (the SQLite file or every
    # Redis key), the SQL history, the records, the agent's logs, the CU's environment (its `env`)
    HistoryWriter(bj.session.coord, History(bj.session.history_url)).drain()
    places: dict[str, bytes] = {str(p): p.read_bytes() for p in bj.home.parent.rglob("*.sqlite*") if p.is_file()}
    assert any("history" in name for name in places) and len(places) >= 1
    if bj.url.startswith("redis://"):
        places["redis"] = redis_dump(bj.url)
    places["records"] = json.dumps([r.data for k in (Kind.PD, Kind.DU, Kind.CU, Kind.PILOT)
                                    for r in bj.records(k)]).encode()
    places["script output"] = (out.stdout + out.stderr).encode()
    places["CU stdout (env)"] = stdout.encode()
    places.update({str(p): p.read_bytes() for p in bj.home.rglob("*") if p.is_file() and not p.name.endswith(
        (".sqlite", ".sqlite-wal", ".sqlite-shm"))})
    coordination = places["redis"] if bj.url.startswith("redis://") else places[bj.url[len("sqlite:///"):]]
    assert f"s3://{bucket}/pilot-data".encode() in coordination  # the search looks where the records are
    for needle in (secret, key_id):
        assert [where for where, data in places.items() if needle.encode() in data] == [], needle


# ---------------------------------------------------------------------- file_transfer over ssh

SSH_TRANSFER = '''
    import os
    from pilotdata import PilotComputeService

    pcs = PilotComputeService(coordination_url=os.environ["COORDINATION_URL"])
    pilotjob = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 1,
                                 "file_transfer": [os.environ["PILOT_FILE"]]})
    ok = pilotjob.submit_compute_unit({"executable": "/bin/cat", "arguments": ["pilot-file.txt", "cu-file.txt"],
                                       "file_transfer": [os.environ["CU_FILE"] + " > cu-file.txt"],
                                       "output": "stdout.txt"})
    missing = pilotjob.submit_compute_unit({"executable": "/bin/true",
                                            "file_transfer": [os.environ["MISSING"]]})
    pilotjob.wait(timeout=60)
    print("OK", ok.get_state(), ok.get_local_working_directory())
    print("MISSING", missing.get_state(), missing.get_details()["reason"])
    pcs.cancel()
'''


def test_file_transfer_from_ssh_urls_with_the_pilots_own_ssh_setup(
    bj_sqlite: ScriptEnv, sshd_server: SshServer, tmp_path: Path
) -> None:
    """The agent reads ssh:// sources with its own ~/.ssh (known_hosts verified), as BigJob's did."""
    home = tmp_path / "user-home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd_server.known_hosts, home / ".ssh" / "known_hosts")
    shutil.copy(sshd_server.key_file, home / ".ssh" / "id_ed25519")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "pilot-file.txt").write_text("for every CU\n")
    (remote / "data.txt").write_text("for one CU\n")
    base = f"ssh://root@127.0.0.1:{sshd_server.port}{remote}"
    out = bj_sqlite.run(SSH_TRANSFER, HOME=str(home), PILOT_FILE=f"{base}/pilot-file.txt",
                        CU_FILE=f"{base}/data.txt", MISSING=f"{base}/no-such-file.txt")
    ((state, directory),) = [line.split() for line in lines_with("OK", out)]
    assert state == "Done"
    assert (Path(directory) / "stdout.txt").read_text() == "for every CU\nfor one CU\n"
    (missing,) = lines_with("MISSING", out)
    assert missing.startswith("Failed input staging failed: file_transfer")
    assert "no-such-file.txt" in missing


# ------------------------------------------------------------------- schemes without a launcher

def test_bigjob_schemes_without_a_launcher_say_so_before_checking_keys(bj_sqlite: ScriptEnv) -> None:
    pcs = PilotComputeService(session=bj_sqlite.session)
    ec2 = {"service_url": "ec2+ssh://aws.amazon.com", "number_of_processes": 1, "vm_id": "ami-d7f742be",
           "vm_ssh_username": "ubuntu", "vm_ssh_keyname": "MyKey", "vm_ssh_keyfile": "/nonexistent/id_rsa",
           "vm_type": "t1.micro", "region": "us-west-1", "access_key_id": "x", "secret_access_key": "x"}
    with pytest.raises(UnknownSchemeError) as info:
        pcs.create_pilot(ec2)
    message = str(info.value)
    assert "no launcher for scheme 'ec2+ssh'" in message and "cloud VM pilots" in message
    assert all(s in message for s in ("fork", "ssh", "slurm")) and "vm_id" not in message
    with pytest.raises(UnknownSchemeError, match=r"'condor'.*Condor"):
        pcs.create_pilot({"service_url": "condor://localhost"})
    with pytest.raises(UnknownSchemeError, match=r"no launcher for scheme 'xyz'; supported: .*fork"):
        pcs.create_pilot({"service_url": "xyz://localhost", "number_of_processes": 1})
    assert bj_sqlite.records(Kind.PILOT) == []  # nothing recorded


# ------------------------------------------------------------------- ssh PilotData with userkey

USERKEY = '''
    import json, os
    from pilotdata import PilotDataService

    with open("test.txt", "w") as f:
        f.write("over sftp\\n")
    pds = PilotDataService(coordination_url=os.environ["COORDINATION_URL"])
    pd = pds.create_pilot({"service_url": os.environ["PD_URL"], "size": 10,
                           "userkey": os.environ["USERKEY"]})   # BigJob's key for this PilotData
    du = pd.submit_data_unit({"file_urls": [os.path.join(os.getcwd(), "test.txt")]})
    print("DU", du.get_url(), du.get_state(), json.dumps(du.list()))
    pds.cancel()
'''


def test_ssh_pilot_data_signs_in_with_bigjobs_userkey_and_never_records_it(
    bj_sqlite: ScriptEnv, sshd_server: SshServer, tmp_path: Path
) -> None:
    home = tmp_path / "user-home"  # known_hosts only: the userkey is the only key that can sign in
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd_server.known_hosts, home / ".ssh" / "known_hosts")
    key = tmp_path / "bigjob-userkey"
    shutil.copy(sshd_server.key_file, key)
    remote = tmp_path / "remote-pd"
    url = f"ssh://root@127.0.0.1:{sshd_server.port}{remote}"
    out = bj_sqlite.run(USERKEY, HOME=str(home), PD_URL=url, USERKEY=str(key), SSH_AUTH_SOCK="")
    ((du, state, listing),) = [line.split(" ", 2) for line in lines_with("DU", out)]
    assert state == "Running" and json.loads(listing)["test.txt"]["pilot_data"] == [f"{url}/{du}/test.txt"]
    assert (remote / du / "test.txt").read_text() == "over sftp\n"
    stored = b"".join(p.read_bytes() for p in bj_sqlite.home.parent.rglob("*.sqlite*") if p.is_file())
    assert url.encode() in stored
    secret_line = key.read_text().splitlines()[1].encode()
    assert str(key).encode() not in stored and secret_line not in stored
    failed = bj_sqlite.run(USERKEY, HOME=str(home), PD_URL=url, USERKEY=str(tmp_path / "missing"),
                           SSH_AUTH_SOCK="", check=False)
    assert failed.returncode != 0 and "userkey: cannot read a private key from" in failed.stderr
