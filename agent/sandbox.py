"""CU sandboxes: the directory a CU runs in, and where its stdout/stderr files go.

The sandbox is ``<workdir>/<cu-id>/`` unless the CU names a ``working_directory`` (absolute, or
relative to the agent's workdir). As BigJob did, a missing working directory is created; one that
cannot be created or is not a writable directory fails the CU with a reason naming the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.task import CUFailed, Task


def sandbox_path(workdir: Path, task: Task) -> Path:
    """Where ``task`` runs (not created)."""
    if task.description.working_directory:
        wd = Path(os.path.expanduser(task.description.working_directory))
        return wd if wd.is_absolute() else workdir / wd
    return workdir / task.id


def make_sandbox(workdir: Path, task: Task) -> str:
    """Create (if needed) the sandbox of ``task`` and return its path; :class:`CUFailed` if it is unusable.

    The path is a ``str``, as every later step on a CU's way takes it (the spawn, its environment, its
    record): a :class:`~pathlib.Path` made, joined and converted back on that way cost a ``/bin/true`` CU
    about 30 us on a slow host."""
    path = os.fspath(sandbox_path(workdir, task)) if task.description.working_directory \
        else os.path.join(workdir, task.id)
    try:
        os.mkdir(path)
        return path  # just made by this agent: a directory it can write (one system call per CU)
    except OSError:
        pass  # exists already, or a parent is missing, or not allowed: the careful way says which
    what = ("working_directory " if task.description.working_directory else "sandbox ") + repr(path)
    full = Path(path)
    try:
        full.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CUFailed(f"{what} is not a directory") from None
    except NotADirectoryError:
        raise CUFailed(f"{what}: a parent of it is not a directory") from None
    except PermissionError:
        raise CUFailed(f"{what}: permission denied") from None
    except OSError as exc:
        raise CUFailed(f"{what}: {exc.strerror or exc}") from exc
    if not full.is_dir():
        raise CUFailed(f"{what} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CUFailed(f"{what} is not writable")
    return path


def output_file(sandbox: str, name: str) -> str:
    """The path of a stdout/stderr file named in the description (a relative name without ``..``, as the
    description checks it), its directory made when the name has one."""
    if "/" not in name:
        return f"{sandbox}/{name}"  # directly in the sandbox, which exists
    path = Path(sandbox, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CUFailed(f"cannot create the directory of output file {name!r}: {exc.strerror or exc}") from exc
    return str(path)
