"""Parsing the batch systems' output: recorded here (Grid Engine 8.1.9, the slurm-wlm-torque wrappers) or
written in the formats their documentation shows (Torque and PBS Pro ``qstat -f``, LSF ``bsub``/``bjobs``),
where no such scheduler can run on this machine."""

from __future__ import annotations

import pytest

from pilotdata.launchers import JobState, JobStatus
from pilotdata.launchers.batch import Pbs
from pilotdata.launchers.batch.lsf import parse_bjobs, parse_bsub_output
from pilotdata.launchers.batch.pbs import parse_qstat_full, parse_qsub_output, status_from_attributes
from pilotdata.launchers.batch.sge import (
    allocation_rule,
    map_state,
    parse_qacct,
    parse_qstat_xml,
    parse_qsub_terse,
    status_from_qacct,
    status_from_qstat,
)

# ------------------------------------------------------------------------------------------ SGE
SGE_QSTAT_XML = """<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>2</JB_job_number>
      <JAT_prio>0.50000</JAT_prio>
      <JB_name>s.sh</JB_name>
      <JB_owner>root</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-12-04T17:49:47</JAT_start_time>
      <queue_name>all.q@sgehost</queue_name>
      <slots>1</slots>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>3</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>s.sh</JB_name>
      <JB_owner>root</JB_owner>
      <state>hqw</state>
      <JB_submission_time>2026-12-04T17:49:47</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""

SGE_QACCT_QDEL = """==============================================================
qname        all.q
hostname     sgehost
jobname      s.sh
jobnumber    2
taskid       undefined
granted_pe   NONE
slots        1
failed       100 : assumedly after job
exit_status  137                  (Killed)
ru_wallclock 3s
==============================================================
qname        all.q
hostname     sgehost
jobnumber    2
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
"""


def test_sge_qstat_xml_and_states() -> None:
    listed = parse_qstat_xml(SGE_QSTAT_XML)
    assert listed == {"2": ("r", "all.q@sgehost"), "3": ("hqw", "")}
    assert status_from_qstat("r") == JobStatus(JobState.RUNNING)
    held = status_from_qstat("hqw")
    assert held.state is JobState.PENDING and "held" in (held.reason or "")
    error = status_from_qstat("Eqw")
    assert error.state is JobState.PENDING and "qstat -j" in (error.reason or "")
    expected = {"qw": JobState.PENDING, "t": JobState.RUNNING, "Rr": JobState.RUNNING, "Rq": JobState.PENDING,
                "dr": JobState.RUNNING, "s": JobState.RUNNING, "": JobState.UNKNOWN}
    for code, state in expected.items():
        assert map_state(code) is state, code
    with pytest.raises(ValueError, match="no XML"):
        parse_qstat_xml("error: commlib error: got select error")


def test_sge_qacct_takes_the_last_record() -> None:
    fields = parse_qacct(SGE_QACCT_QDEL)
    assert fields is not None and fields["failed"].startswith("37")
    walltime = status_from_qacct(fields)
    assert (walltime.state, walltime.exit_code) == (JobState.FAILED, -9)  # 128 + SIGKILL
    assert walltime.reason == "SGE failed 37 : qmaster enforced h_rt, h_cpu, or h_vmem limit"
    assert status_from_qacct({"failed": "0", "exit_status": "0"}) == JobStatus(JobState.DONE, 0, None)
    assert status_from_qacct({"failed": "0", "exit_status": "3"}).exit_code == 3
    assert parse_qacct("") is None


def test_sge_qsub_and_pe() -> None:
    assert parse_qsub_terse("17\n") == "17"
    assert parse_qsub_terse("18.1-4:1\n") == "18"
    assert parse_qsub_terse('Your job 19 ("pilot-x") has been submitted\n') == "19"
    with pytest.raises(ValueError):
        parse_qsub_terse("Unable to run job: job rejected\n")
    assert allocation_rule("pe_name smp\nslots 999\nallocation_rule    $pe_slots\n") == "$pe_slots"
    assert allocation_rule("pe_name x\n") is None


# ------------------------------------------------------------------------------------------ PBS
WRAPPER_QSTAT_F = """Job Id:\t1
\tJob_Name = pilot-xyz
\tJob_Owner = root@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Fri Dec  4 17:43:08 2026
\texec_host = vm/2
\tResource_List.walltime = 00:05:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 2

Job Id:\t2
\tJob_Name = pilot-xyz
\tjob_state = R
\tqueue = debug

"""

TORQUE_QSTAT_F = """Job Id: 179.head.cluster.org
    Job_Name = pilot-0a1b
    Job_Owner = alice@login1.cluster.org
    job_state = C
    queue = batch
    server = head.cluster.org
    Output_Path = login1.cluster.org:/home/alice/pilots/pilot-0a1b.stdout
    Resource_List.nodect = 2
    Resource_List.nodes = 2:ppn=16
    Resource_List.walltime = 02:00:00
    Variable_List = PBS_O_HOME=/home/alice,PBS_O_LOGNAME=alice,
\tPBS_O_PATH=/usr/bin:/bin,PBS_O_WORKDIR=/home/alice
    exit_status = 271
    comment = job killed: walltime 7210 exceeded limit 7200

Job Id: 180.head.cluster.org
    Job_Name = pilot-0a1c
    job_state = C
    exit_status = -1

Job Id: 181.head.cluster.org
    Job_Name = pilot-0a1d
    job_state = C
    exit_status = 0

Job Id: 182.head.cluster.org
    Job_Name = pilot-0a1e
    job_state = Q
    comment = Not Running: Insufficient amount of resource: ncpus
"""

PBSPRO_QSTAT_XF = """Job Id: 4242.pbs01
    Job_Name = pilot-77
    job_state = F
    queue = workq
    Exit_status = 3
    Resource_List.select = 2:ncpus=8:mpiprocs=8

Job Id: 4243.pbs01
    Job_Name = pilot-78
    job_state = R
"""


def test_wrapper_qstat_has_no_exit_status() -> None:
    jobs = parse_qstat_full(WRAPPER_QSTAT_F)
    assert sorted(jobs) == ["1", "2"] and jobs["1"]["Resource_List.ncpus"] == "2"
    ended = status_from_attributes(jobs["1"])
    assert ended is not None and (ended.state, ended.exit_code) == (JobState.FAILED, None)  # the launcher looks further
    assert status_from_attributes(jobs["2"]) == JobStatus(JobState.RUNNING)


def test_torque_qstat_full() -> None:
    jobs = parse_qstat_full(TORQUE_QSTAT_F)
    assert jobs["179.head.cluster.org"]["Variable_List"].endswith("PBS_O_WORKDIR=/home/alice")  # joined
    killed = status_from_attributes(jobs["179.head.cluster.org"])
    assert killed == JobStatus(JobState.FAILED, -15, "job killed: walltime 7210 exceeded limit 7200")
    never_ran = status_from_attributes(jobs["180.head.cluster.org"])
    assert never_ran is not None and never_ran.state is JobState.FAILED
    assert "did not run to its end" in (never_ran.reason or "")
    assert status_from_attributes(jobs["181.head.cluster.org"]) == JobStatus(JobState.DONE, 0, None)
    queued = status_from_attributes(jobs["182.head.cluster.org"])
    assert queued == JobStatus(JobState.PENDING, None, "Not Running: Insufficient amount of resource: ncpus")


def test_pbs_pro_qstat_finished() -> None:
    jobs = parse_qstat_full(PBSPRO_QSTAT_XF)
    assert status_from_attributes(jobs["4242.pbs01"]) == JobStatus(JobState.FAILED, 3, "exit code 3")
    assert status_from_attributes(jobs["4243.pbs01"]) == JobStatus(JobState.RUNNING)
    assert status_from_attributes({"job_state": "Z"}) == JobStatus(JobState.UNKNOWN, None, "PBS state Z")
    assert status_from_attributes({}) is None


def test_pbs_job_ids() -> None:
    assert parse_qsub_output("179.head.cluster.org\n") == "179.head.cluster.org"
    assert parse_qsub_output("1\n") == "1"
    with pytest.raises(ValueError):
        parse_qsub_output("qsub: submit error (Bad UID for job execution MSG=...)\n")
    pattern = Pbs.job_id_pattern
    assert all(pattern.match(i) for i in ("179", "179.head.cluster.org", "4242[].pbs01"))
    assert not any(pattern.match(i) for i in ("", "abc", "1;2", "1 2"))


# ------------------------------------------------------------------------------------------ LSF
LSF_BJOBS = """4242|RUN|-
4243|PEND|-
4244|DONE|-
4245|EXIT|3
4246|EXIT|130
4247|USUSP|-
4248|ZOMBI|-
4249|UNKWN|-
Job <4250> is not found
"""


def test_lsf_bsub_output() -> None:
    assert parse_bsub_output("Job <4242> is submitted to queue <normal>.\n") == "4242"
    assert parse_bsub_output("Job <7> is submitted to default queue <short>.\n") == "7"
    with pytest.raises(ValueError):
        parse_bsub_output("Project name not valid. Job not submitted.\n")


def test_lsf_bjobs_output() -> None:
    got = parse_bjobs(LSF_BJOBS)
    assert got["4242"] == JobStatus(JobState.RUNNING)
    assert got["4243"] == JobStatus(JobState.PENDING)
    assert got["4244"] == JobStatus(JobState.DONE, 0, None)
    assert got["4245"] == JobStatus(JobState.FAILED, 3, "LSF state EXIT, exit code 3")
    assert got["4246"] == JobStatus(JobState.FAILED, -2, "LSF state EXIT, exit code 130")  # 128 + SIGINT (bkill)
    assert got["4247"].state is JobState.RUNNING and got["4247"].reason == "LSF state USUSP"
    assert got["4248"].state is JobState.FAILED
    assert got["4249"].state is JobState.UNKNOWN
    assert "4250" not in got
