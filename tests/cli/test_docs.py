"""The CLI docs stay true: the generated reference is current, the tutorial's bash blocks run as
written, and every ``pdata`` command the docs mention exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import transfer
from pilotdata.cli import cli
from pilotdata.cli.reference import render_reference
from tests.cli.conftest import pdata_argv

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)


def tutorial_script() -> str:
    """The ```bash blocks of docs/cli.md, in order, as one script that stops at the first failure."""
    blocks = BASH_BLOCK.findall((DOCS / "cli.md").read_text(encoding="utf-8"))
    return "set -euo pipefail\n" + "\n".join(blocks)


def test_reference_is_generated_from_the_current_commands() -> None:
    committed = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), "docs/cli-reference.md is stale: run scripts/gen-cli-reference"
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-cli-reference"), "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    for name in ("pdata store add", "pdata pilot start", "pdata submit", "pdata report", "pdata agent"):
        assert f"\n## {name}\n" in committed


def _command_exists(words: list[str]) -> bool:
    command: click.Command = cli
    ctx = click.Context(cli)
    for word in words:
        if not isinstance(command, click.Group):
            return True  # the rest are arguments
        sub = command.get_command(ctx, word)
        if sub is None:
            return False
        command = sub
    return True


def _mentions(text: str) -> set[tuple[str, ...]]:
    """The command words of every ``pdata ...`` in inline code or in a code block line."""
    found: set[tuple[str, ...]] = set()
    uses = re.findall(r"`pdata ([^`]+)`", text)
    for block in re.findall(r"^```[a-z]*\n(.*?)^```$", text, re.S | re.M):
        uses += re.findall(r"(?:^|\$\(|\s)pdata ([^\n)]*)", block, re.M)
    for use in uses:
        words = []
        for token in use.split()[:2]:
            if not re.fullmatch(r"[a-z][a-z-]*", token):
                break
            words.append(token)
        if words:
            found.add(tuple(words))
    return found


def test_every_pdata_command_the_docs_mention_exists() -> None:
    mentioned: set[tuple[str, ...]] = set()
    for doc in ("cli.md", "bigjob-mapping.md"):
        mentioned |= _mentions((DOCS / doc).read_text(encoding="utf-8"))
    assert len(mentioned) > 15
    missing = [" ".join(m) for m in sorted(mentioned) if not _command_exists(list(m))]
    assert missing == [], f"docs mention pdata commands that do not exist: {missing}"


def test_tutorial_blocks_are_parsed_in_order() -> None:
    script = tutorial_script()
    order = [script.index(cmd) for cmd in ("pdata store add site-a", "pdata put db", "pdata pilot start",
                                           "pdata submit", "pdata wait", "pdata report", "pdata pilot stop")]
    assert order == sorted(order)
    assert "pip install" not in script  # set-up lines live in ```sh blocks, not run


@pytest.mark.skipif(not hasattr(transfer, "copy_files"),
                    reason="the tutorial moves data: the transfer engine (transfer.copy_files) has not landed yet")
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "pdata"
    shim.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in pdata_argv()) + ' "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("PDATA_NAMESPACE", None)
    workdir = tmp_path / "pdata-tutorial"
    try:
        run = subprocess.run(["bash", "-c", tutorial_script()], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600, check=False)
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    finally:
        subprocess.run([*pdata_argv(), "pilot", "stop", "--all"], cwd=workdir,
                       env={**env, "PDATA_HOME": str(workdir / ".pdata")}, capture_output=True, timeout=120,
                       check=False)
    hits = sorted((workdir / "out").glob("hits-*.txt"))
    assert [h.name for h in hits] == [f"hits-{n}.txt" for n in (1, 2, 3, 4)]
    assert all(int(h.read_text()) >= 10 for h in hits)  # every planted query is found
    assert (workdir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Canceled" in run.stdout  # the last block lists the stopped pilot
