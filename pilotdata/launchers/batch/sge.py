"""Grid Engine (SGE, Son of Grid Engine, Univa / Altair GE): ``qsub``, ``qstat -xml``, ``qacct``, ``qdel``.

Directives (``#$``): ``-N`` (name), ``-S /bin/bash`` (the queue's shell would otherwise run the
script), ``-wd``, ``-o``, ``-e``, ``-pe PE SLOTS`` (a parallel environment for more than one slot;
option ``parallel_environment``), ``-q`` (queue), ``-P`` (project), ``-l h_rt=HH:MM:SS``.

Grid Engine has no per-job "cores per node": the parallel environment's ``allocation_rule``
decides how slots spread over hosts. When the spec gives cores per node, the submission checks
the rule first (``qconf -sp PE``): a fixed number must match it, ``$pe_slots`` (all slots on one
host) must fit one node; ``$fill_up`` and ``$round_robin`` are accepted with a warning, the agent
learns the hosts it got from ``$PE_HOSTFILE``.

Status: ``qstat -xml`` lists the user's pending and running jobs in one call; a job it no longer
lists is looked up with ``qacct -j ID`` (``failed``, ``exit_status``), which needs accounting
(on by default; the record appears after ``accounting_flush_time``).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pilotdata.errors import LaunchError
from pilotdata.launchers._runner import CommandRunner, RunResult
from pilotdata.launchers.base import JobState, JobStatus
from pilotdata.launchers.batch.system import BatchJob, BatchSystem, directive_value, signal_exit

log = logging.getLogger(__name__)


def map_state(code: str) -> JobState:
    """The :class:`JobState` of an SGE state code (``qw``, ``hqw``, ``r``, ``t``, ``Rr``, ``s``, ``dr``, ``Eqw``...)."""
    if not code:
        return JobState.UNKNOWN
    if "q" in code or "w" in code:  # queued / waiting (also held, in error, rescheduled: hqw, Eqw, Rq)
        return JobState.PENDING
    if any(c in code for c in "rtRsSTd"):  # running, transferring, restarted, suspended, being deleted
        return JobState.RUNNING
    if "h" in code or "E" in code:
        return JobState.PENDING
    return JobState.UNKNOWN


def parse_qstat_xml(text: str) -> dict[str, tuple[str, str]]:
    """``qstat -xml`` -> {job id: (state code, queue)}; array tasks count once, by their job id."""
    jobs: dict[str, tuple[str, str]] = {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"qstat -xml printed no XML: {exc}") from exc
    for element in root.iter("job_list"):
        number = (element.findtext("JB_job_number") or "").strip()
        if number:
            jobs.setdefault(number, ((element.findtext("state") or "").strip(), element.findtext("queue_name") or ""))
    return jobs


def status_from_qstat(code: str) -> JobStatus:
    """Pending or running, with the state code as the reason when it is unusual (held, error)."""
    state = map_state(code)
    reason = None
    if "E" in code:
        reason = f"SGE error state {code}: the job stays queued until it is cleared (qstat -j ID says why)"
    elif "h" in code:
        reason = f"SGE state {code}: held"
    return JobStatus(state, None, reason)


def parse_qacct(text: str) -> dict[str, str] | None:
    """The last record in ``qacct -j ID`` output -> {field: value} (None without a record)."""
    records = [r for r in re.split(r"^=+\s*$", text, flags=re.MULTILINE) if r.strip()]
    if not records:
        return None
    fields: dict[str, str] = {}
    for line in records[-1].splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            fields[key] = value.strip()
    return fields if "exit_status" in fields else None


def status_from_qacct(fields: Mapping[str, str]) -> JobStatus:
    """A final status from a ``qacct`` record: ``failed`` (0 or ``N : why``) and ``exit_status``."""
    raw = fields.get("exit_status", "").split()[0] if fields.get("exit_status") else ""
    code = int(raw) if raw.lstrip("-").isdigit() else None
    failed = " ".join(fields.get("failed", "0").split())
    if code is None:
        return JobStatus(JobState.FAILED, None, f"SGE accounting: failed {failed}")
    if failed.split()[0:1] == ["0"]:
        return signal_exit(code, f"exit code {code}")
    if code > 128:  # killed by a signal (qdel, h_rt): 128 + signal
        return JobStatus(JobState.FAILED, -(code - 128), f"SGE failed {failed}")
    return JobStatus(JobState.FAILED, code, f"SGE failed {failed}")


def parse_qsub_terse(text: str) -> str:
    """The job id ``qsub -terse`` prints (``12``, or ``12.1-4:1`` for an array); ``ValueError`` if none."""
    for line in reversed(text.strip().splitlines()):
        match = re.match(r"^\s*(\d+)(?:\.\S+)?\s*$", line) or re.search(r"Your job(?:-array)? (\d+)", line)
        if match:
            return match.group(1)
    raise ValueError(f"qsub printed {text.strip()[:200]!r}, not a job id")


def allocation_rule(qconf_sp: str) -> str | None:
    """The ``allocation_rule`` of a ``qconf -sp PE`` listing."""
    match = re.search(r"^allocation_rule\s+(\S+)", qconf_sp, flags=re.MULTILINE)
    return match.group(1) if match else None


class Sge(BatchSystem):
    """Grid Engine through ``qsub``, ``qstat``, ``qacct``, ``qdel``.

    Options: ``parallel_environment`` (the PE for ``-pe``; needed for more than one slot; ``qconf
    -spl`` lists them; BigJob / SAGA took it from ``spmd_variation``), ``sge_root`` and
    ``sge_cell`` (exported as ``SGE_ROOT`` / ``SGE_CELL`` to the client commands).
    """

    name: ClassVar[str] = "SGE"
    prefix: ClassVar[str] = "#$"
    submit_command: ClassVar[str] = "qsub"
    status_command: ClassVar[str] = "qstat"
    cancel_command: ClassVar[str] = "qdel"
    options: ClassVar[frozenset[str]] = frozenset({"parallel_environment", "sge_root", "sge_cell"})
    gone: ClassVar[tuple[str, ...]] = ("does not exist",)

    def __init__(
        self,
        runner: CommandRunner,
        url: str,
        client_env: Mapping[str, str] | None = None,
        *,
        parallel_environment: str | None = None,
        sge_root: str | None = None,
        sge_cell: str | None = None,
    ) -> None:
        env = dict(client_env or {})
        if sge_root:
            env["SGE_ROOT"] = sge_root
        if sge_cell:
            env["SGE_CELL"] = sge_cell
        super().__init__(runner, url, env)
        if parallel_environment is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", parallel_environment):
            raise LaunchError(f"{url}: parallel_environment {parallel_environment!r} is not a PE name")
        self.parallel_environment = parallel_environment
        self._rules: dict[str, str | None] = {}

    def directives(self, job: BatchJob) -> list[str]:
        """``-N``, ``-S``, ``-wd``, ``-o``, ``-e``, ``-pe``, ``-q``, ``-P``, ``-l h_rt``."""
        spec = job.spec
        lines = [
            f"-N {job.name}",
            "-S /bin/bash",
            f"-wd {directive_value('working_directory', job.working_directory)}",
            f"-o {directive_value('stdout', job.stdout)}",
            f"-e {directive_value('stderr', job.stderr)}",
        ]
        if self.parallel_environment:
            lines.append(f"-pe {self.parallel_environment} {job.processes}")
        elif job.processes > 1:
            raise LaunchError(
                f"{self.url}: pilot {spec.pilot_id} asks for {job.processes} slots, which Grid Engine gives only "
                "through a parallel environment: pass the launcher option parallel_environment= (qconf -spl "
                "lists them)"
            )
        if spec.queue:
            lines.append(f"-q {directive_value('queue', spec.queue)}")
        if job.project:
            lines.append(f"-P {directive_value('project', job.project)}")
        if job.walltime_hms is not None:
            lines.append(f"-l h_rt={job.walltime_hms}")
        return lines

    def check_spread(self, job: BatchJob) -> None:
        """Refuse cores per node the parallel environment's ``allocation_rule`` cannot give."""
        pe, ppn, nodes = self.parallel_environment, job.cores_per_node, job.nodes
        if pe is None or ppn is None or nodes is None:
            return
        if pe not in self._rules:
            result = self.run("qconf", "-sp", pe)
            if result.returncode != 0:
                raise LaunchError(f"{self.url}: parallel environment {pe!r}: {result.error_text()}")
            self._rules[pe] = allocation_rule(result.stdout)
        rule = self._rules[pe]
        if rule is None:
            return
        if rule.isdigit() and int(rule) != ppn:
            raise LaunchError(
                f"{self.url}: parallel environment {pe!r} places {rule} slots per host (allocation_rule {rule}), "
                f"but processes_per_node is {ppn}: choose a PE whose allocation_rule is {ppn}"
            )
        if rule == "$pe_slots" and nodes > 1:
            raise LaunchError(
                f"{self.url}: parallel environment {pe!r} puts all slots on one host ($pe_slots), but the pilot "
                f"asks for {nodes} nodes of {ppn}: choose a PE with allocation_rule {ppn}, $fill_up or $round_robin"
            )
        if rule in ("$fill_up", "$round_robin"):
            log.warning(
                "sge: parallel environment %s spreads slots by %s; %d per node is not enforced "
                "(the agent reads the hosts it got from PE_HOSTFILE)", pe, rule, ppn,
            )

    def submit(self, job: BatchJob) -> str:
        """Check the PE's spread, then ``qsub -terse SCRIPT``."""
        self.check_spread(job)
        result = self.run("qsub", "-terse", job.script)
        if result.returncode != 0:
            raise LaunchError(f"{self.url}: qsub rejected pilot {job.spec.pilot_id}: {result.error_text()}")
        try:
            return parse_qsub_terse(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``qstat -xml``: the user's pending and running jobs, filtered to ``job_ids``."""
        result = self.run("qstat", "-xml")
        if result.returncode != 0:
            raise self.fail("qstat", result)
        try:
            listed = parse_qstat_xml(result.stdout)
        except ValueError as exc:
            raise LaunchError(f"{self.url}: {exc}") from exc
        wanted = set(job_ids)
        return {job_id: status_from_qstat(code) for job_id, (code, _) in listed.items() if job_id in wanted}

    def ended(self, job_id: str) -> JobStatus | None:
        """``qacct -j ID``: the accounting record, once it is written."""
        result = self.run("qacct", "-j", job_id)
        fields = parse_qacct(result.stdout) if result.returncode == 0 else None
        return status_from_qacct(fields) if fields else None

    def cancel(self, job_id: str) -> RunResult:
        """``qdel ID``."""
        return self.run("qdel", job_id)
