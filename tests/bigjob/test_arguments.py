"""Argument semantics, both ways, on a real pilot.

A dict given to the Pilot-API without ``shell`` runs as BigJob ran it: executable and arguments joined
into one ``/bin/sh`` command line (empty arguments vanish; quotes, globs, ``$VAR``, redirections and
pipes work). ``"shell": False`` and ``pdata submit -- ARGV`` run the argv without a shell: an empty
argument stays, and ``*``, ``>``, ``;``, backquotes and quotes reach the program as typed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pilotdata.states import Kind
from tests.bigjob.conftest import ScriptEnv, lines_with

SCRIPT = '''
    import json, os
    from pilotdata import PilotComputeService, ComputeDataService, State

    COORDINATION_URL = os.environ["COORDINATION_URL"]
    globdir = os.path.join(os.getcwd(), "globbed")
    os.makedirs(globdir)
    for name in ("x.txt", "y.txt", "z.dat"):
        open(os.path.join(globdir, name), "w").close()

    pcs = PilotComputeService(coordination_url=COORDINATION_URL)
    pilot = pcs.create_pilot({"service_url": "fork://localhost", "number_of_processes": 2})
    cds = ComputeDataService()
    cds.add_pilot_compute_service(pcs)

    units = {
        # BigJob's way (no "shell" key)
        "empty": {"executable": "/bin/echo", "arguments": ["a", "", "b"]},
        "glob": {"executable": "/bin/ls", "arguments": [globdir + "/*.txt"]},
        "var": {"executable": "/bin/echo", "arguments": ["$GREETING", "${GREETING}world"],
                "environment": {"GREETING": "hello"}},
        "redirect": {"executable": "/bin/echo", "arguments": ["redirected", ">", "out.txt"]},
        "quote_pipe": {"executable": "/bin/echo", "arguments": ["'a   b'", "|", "tr", "a", "A"]},
        "env_value": {"executable": "/bin/echo", "arguments": ["$WHERE"],
                      "environment": {"WHERE": "$HOME/data", "LITERAL": "\\\\$HOME"}},
        "exit_code": {"executable": "exit", "arguments": ["3"]},
        "missing": {"executable": "/no/such/program", "arguments": [""]},
        # the argv, no shell
        "argv_empty": {"executable": "/bin/echo", "arguments": ["a", "", "b"], "shell": False},
        "argv_special": {"executable": "/bin/echo", "shell": False,
                         "arguments": ["*.txt", ">", "out.txt", "a;b", "`hostname`", "'q'", "|", "x"]},
        "argv_var": {"executable": "/bin/echo", "arguments": ["$GREETING"], "shell": False,
                     "environment": {"GREETING": "hello"}},
    }
    cus = {name: cds.submit_compute_unit(dict(d, output="stdout.txt", error="stderr.txt"))
           for name, d in units.items()}
    direct = pilot.submit_compute_unit({"executable": "/bin/echo", "arguments": ["x", "", "y"],
                                        "output": "stdout.txt"})
    cds.wait()
    direct.wait()
    cus["direct"] = direct
    print("RESULT", json.dumps({n: [cu.get_state(), cu.get_local_working_directory(),
                                    cu.get_details()["reason"]] for n, cu in cus.items()}))
    print("PILOT", pilot.get_url())
'''


def _cli(bj: ScriptEnv, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pilotdata.cli", *argv], cwd=bj.work, env=bj.environment(),
                          capture_output=True, text=True, timeout=120, check=False)


def test_bigjob_shell_line_and_the_argv_without_shell(bj: ScriptEnv) -> None:
    out = bj.run(SCRIPT)
    results = json.loads(lines_with("RESULT", out)[0])

    def stdout(name: str, file: str = "stdout.txt") -> str:
        state, directory, reason = results[name]
        assert state == "Done", (name, reason)
        return (Path(directory) / file).read_text()

    # BigJob's command line through the shell
    assert stdout("empty") == "a b\n"
    glob = bj.work / "globbed"
    assert stdout("glob") == f"{glob}/x.txt\n{glob}/y.txt\n"
    assert stdout("var") == "hello helloworld\n"
    assert stdout("redirect") == "" and stdout("redirect", "out.txt") == "redirected\n"
    assert stdout("quote_pipe") == "A   b\n"
    assert stdout("env_value") == f"{os.environ['HOME']}/data\n"
    assert stdout("direct") == "x y\n"
    assert results["exit_code"][0] == "Failed" and results["exit_code"][2] == "exit code 3"
    assert results["missing"][0] == "Failed" and "executable not found: /no/such/program" in results["missing"][2]
    # the argv without a shell
    assert stdout("argv_empty") == "a  b\n"
    assert stdout("argv_special") == "*.txt > out.txt a;b `hostname` 'q' | x\n"
    assert not (Path(results["argv_special"][1]) / "out.txt").exists()
    assert stdout("argv_var") == "hello\n"  # $VAR is still expanded without a shell
    stored = {r.data["description"]["executable"] + " " + str(r.data["description"]["shell"])
              for r in bj.records(Kind.CU)}
    assert "/bin/ls True" in stored  # the mode is written into the stored description

    # pdata submit keeps the argv (on the pilot the script left running)
    (pilot_id,) = lines_with("PILOT", out)
    cli = _cli(bj, "submit", "--pilot", pilot_id, "--", "/bin/echo", "*", ">", "", "$HOME;x")
    assert cli.returncode == 0, cli.stderr
    cu_id = cli.stdout.strip()
    waited = _cli(bj, "wait", cu_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    record = bj.session.coord.get(Kind.CU, cu_id)
    assert record.data["description"]["shell"] is False
    assert (Path(record.data["sandbox"]) / "stdout").read_text() == f"* >  {os.environ['HOME']};x\n"
