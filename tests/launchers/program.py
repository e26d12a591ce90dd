"""A small controllable command for launcher tests (launchers run command lines, not the agent).

It writes ``<name>.started`` (holding its pid, or the value of an environment variable), optionally
starts a grandchild (pid in ``<name>.grandchild``), optionally ignores SIGTERM, holds until
``<name>.release`` exists, prints a line and exits with the requested code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT = r"""
import argparse, os, pathlib, signal, subprocess, sys, threading

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--name", required=True)
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--hold", action="store_true")
parser.add_argument("--env", default=None)
parser.add_argument("--grandchild", action="store_true")
parser.add_argument("--ignore-term", action="store_true")
args = parser.parse_args()
d = pathlib.Path(args.dir)

def publish(name, text):
    tmp = d / (name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, d / name)

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.grandchild:
    g = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait(600)"])
    publish(args.name + ".grandchild", str(g.pid))
publish(args.name + ".pid", str(os.getpid()))
publish(args.name + ".started", os.environ.get(args.env, "<unset>") if args.env else "started")
if args.hold:
    release, tick = d / (args.name + ".release"), threading.Event()
    for _ in range(6000):  # at most about 2 minutes
        if release.exists():
            break
        tick.wait(0.02)
print("program", args.name, "finished", flush=True)
sys.exit(args.exit)
"""


class Program:
    """The script in ``directory`` and the files it writes there (the directory is shared with SLURM/sshd)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)
        self.directory = directory
        self.script = directory / "prog.py"
        self.script.write_text(SCRIPT)

    def argv(
        self,
        name: str,
        *,
        exit_code: int = 0,
        hold: bool = False,
        env: str | None = None,
        grandchild: bool = False,
        ignore_term: bool = False,
        python: str = sys.executable,
    ) -> list[str]:
        """The command line for one run called ``name``."""
        argv = [
            python,
            str(self.script),
            "--dir",
            str(self.directory),
            "--name",
            name,
            "--exit",
            str(exit_code),
        ]
        if hold:
            argv.append("--hold")
        if env:
            argv += ["--env", env]
        if grandchild:
            argv.append("--grandchild")
        if ignore_term:
            argv.append("--ignore-term")
        return argv

    def started(self, name: str) -> bool:
        """Whether run ``name`` has started."""
        return (self.directory / f"{name}.started").exists()

    def started_text(self, name: str) -> str:
        """What run ``name`` wrote at start (``started`` or the environment variable's value)."""
        return (self.directory / f"{name}.started").read_text()

    def pid(self, name: str) -> int:
        """The pid of run ``name``."""
        return int((self.directory / f"{name}.pid").read_text())

    def grandchild(self, name: str) -> int:
        """The pid of the grandchild run ``name`` started."""
        return int((self.directory / f"{name}.grandchild").read_text())

    def release(self, name: str) -> None:
        """Let a holding run ``name`` finish."""
        (self.directory / f"{name}.release").write_text("go")


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (missing, or a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True
