"""BigJob's tutorial ensembles, attribute-style (``pilot.PilotComputeDescription()`` filled field by field).

Each script is written the way BigJob's tutorials are (``import pilotdata as pilot`` instead of ``import
pilot``; unused settings left as empty strings; ``$VAR`` in arguments; ``pilotjob.wait()``;
``get_local_working_directory()``), runs in a subprocess, and the test reads the files its tasks wrote.
"""

from __future__ import annotations

from pathlib import Path

from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, lines_with

PILOT = '''
    import os, shutil, sys, time
    import pilotdata as pilot

    COORD = os.environ["COORDINATION_URL"]
    NUMBER_JOBS = 4

    pilot_description = pilot.PilotComputeDescription()
    pilot_description.service_url = "fork://localhost"
    pilot_description.queue = ""                  # settings this resource does not use stay empty
    pilot_description.project = ""
    pilot_description.number_of_processes = 2
    pilot_description.working_directory = os.path.join(os.getcwd(), "agent")
    pilot_description.walltime = 10
    pilot_description.processes_per_node = ""
    pilot_description.spmd_variation = ""
    pilot_compute_service = pilot.PilotComputeService(COORD)
    pilotjob = pilot_compute_service.create_pilot(pilot_description)


    def task(executable, arguments, output, error, environment=None):
        task_desc = pilot.ComputeUnitDescription()
        task_desc.executable = executable
        task_desc.arguments = arguments
        if environment is not None:
            task_desc.environment = environment
        task_desc.number_of_processes = 1
        task_desc.spmd_variation = "single"
        task_desc.output = output
        task_desc.error = error
        return pilotjob.submit_compute_unit(task_desc)
'''

SIMPLE = PILOT + '''
    tasks = [task("/bin/echo", ["I am task number $TASK_NO"], "simple-ensemble-stdout.txt",
                  "simple-ensemble-stderr.txt", {"TASK_NO": i}) for i in range(NUMBER_JOBS)]
    pilotjob.wait()
    for t in tasks:
        print("TASK", t.get_state(), t.get_local_working_directory())
    pilotjob.cancel()
    pilot_compute_service.cancel()
'''


def test_simple_ensemble(bj: ScriptEnv) -> None:
    out = bj.run(SIMPLE)
    rows = [line.split(" ", 1) for line in lines_with("TASK", out)]
    assert [state for state, _ in rows] == ["Done"] * 4
    for i, (_, directory) in enumerate(rows):
        assert Path(directory).parent == bj.work / "agent"
        assert (Path(directory) / "simple-ensemble-stdout.txt").read_text() == f"I am task number {i}\n"
        assert (Path(directory) / "simple-ensemble-stderr.txt").read_text() == ""
    assert [p.state for p in bj.records(Kind.PILOT)] == ["Canceled"]


CHAINED = PILOT + '''
    set_a = [task("/bin/echo", ["I am an $TASK_SET task with id $TASK_NO"], "A-stdout.txt", "A-stderr.txt",
                  {"TASK_SET": "A", "TASK_NO": i}) for i in range(NUMBER_JOBS)]
    set_b = []
    waiting = list(set_a)
    deadline = time.time() + 120
    while waiting and time.time() < deadline:   # BigJob's tutorial polls the A tasks
        for a_task in list(waiting):
            state = a_task.get_state()
            if state == "Done":
                b = task("/bin/cat", ["%s/A-stdout.txt" % a_task.get_local_working_directory()],
                         "B-stdout.txt", "B-stderr.txt")
                set_b.append(b)
                waiting.remove(a_task)
            elif state in ("Failed", "Canceled"):
                sys.exit("A task %s is %s" % (a_task.get_id(), state))
        time.sleep(0.05)
    pilotjob.wait()
    for b in set_b:
        print("B", b.get_state(), b.get_local_working_directory())
    pilotjob.cancel()
    pilot_compute_service.cancel()
'''


def test_chained_ensemble_reads_the_outputs_of_the_first_set(bj: ScriptEnv) -> None:
    out = bj.run(CHAINED)
    rows = [line.split(" ", 1) for line in lines_with("B", out)]
    assert [state for state, _ in rows] == ["Done"] * 4
    texts = sorted((Path(d) / "B-stdout.txt").read_text() for _, d in rows)
    assert texts == [f"I am an A task with id {i}\n" for i in range(4)]


COUPLED = PILOT + '''
    set_a = [task("/bin/echo", ["I am an $TASK_SET task with id $TASK_NO"], "A-stdout.txt", "A-stderr.txt",
                  {"TASK_SET": "A", "TASK_NO": i}) for i in range(NUMBER_JOBS)]
    set_b = [task("/bin/echo", ["I am a $TASK_SET task with id $TASK_NO"], "B-stdout.txt", "B-stderr.txt",
                  {"TASK_SET": "B", "TASK_NO": i}) for i in range(NUMBER_JOBS)]
    pilotjob.wait()
    set_c = []
    for i in range(NUMBER_JOBS):
        set_c.append(task("/bin/cat", ["%s/A-stdout.txt" % set_a[i].get_local_working_directory(),
                                       "%s/B-stdout.txt" % set_b[i].get_local_working_directory()],
                          "C-stdout.txt", "C-stderr.txt"))
    pilotjob.wait()
    for c in set_c:
        print("C", c.get_state(), c.get_local_working_directory())
    pilotjob.cancel()
    pilot_compute_service.cancel()
'''


def test_coupled_ensemble_waits_for_two_sets_then_joins_them(bj: ScriptEnv) -> None:
    out = bj.run(COUPLED)
    rows = [line.split(" ", 1) for line in lines_with("C", out)]
    assert [state for state, _ in rows] == ["Done"] * 4
    for i, (_, directory) in enumerate(rows):
        assert (Path(directory) / "C-stdout.txt").read_text() == (
            f"I am an A task with id {i}\nI am a B task with id {i}\n")


DATA_TRANSFER = PILOT + '''
    with open("input.txt", "w") as f:
        f.write("shared input\\n")
    tasks = []
    for i in range(NUMBER_JOBS):
        task_desc = pilot.ComputeUnitDescription()
        task_desc.executable = "/bin/cat"
        task_desc.arguments = ["input.txt", "-"]      # a shell line: '-' reads the redirected file
        task_desc.arguments.append("< task-note.txt")  # BigJob's agent ran arguments in a shell
        task_desc.environment = ["TASK_NO=%d" % i]
        task_desc.file_transfer = ["file://%s/input.txt > BIGJOB_WORK_DIR" % os.getcwd(),
                                   "%s/note-%d.txt > task-note.txt" % (os.getcwd(), i)]
        task_desc.output = "stdout.txt"
        task_desc.error = "stderr.txt"
        with open("note-%d.txt" % i, "w") as f:
            f.write("note for task %d\\n" % i)
        tasks.append(pilotjob.submit_compute_unit(task_desc))
    pilotjob.wait()
    for t in tasks:   # the tutorial copies each task's stdout.txt back to the current directory
        local = "ex-2-stdout-%s.txt" % t.get_id()
        shutil.copy(os.path.join(t.get_local_working_directory(), "stdout.txt"), local)
        print("COPIED", t.get_state(), local)
    pilotjob.cancel()
    pilot_compute_service.cancel()
'''


def test_ensemble_with_a_data_transfer_in_and_out(bj: ScriptEnv) -> None:
    out = bj.run(DATA_TRANSFER)
    rows = [line.split(" ", 1) for line in lines_with("COPIED", out)]
    assert [state for state, _ in rows] == ["Done"] * 4
    for i, (_, local) in enumerate(rows):
        assert (bj.work / local).read_text() == f"shared input\nnote for task {i}\n"
    cus = bj.records(Kind.CU)
    for cu in cus:  # the transfers landed in the sandbox under their targets
        sandbox = Path(cu.data["sandbox"])
        assert (sandbox / "input.txt").read_text() == "shared input\n"
        assert (sandbox / "task-note.txt").exists()
