"""Launchers: start a pilot's agent command line on a resource chosen by the ``service_url`` scheme.

==================  ==========================================  ============================
scheme              launcher                                    where the command runs
==================  ==========================================  ============================
``fork``            :class:`~pilotdata.launchers.fork.ForkLauncher`      this host, detached
``ssh``             :class:`~pilotdata.launchers.ssh.SshLauncher`        a host over SSH, detached
``slurm``           :class:`~pilotdata.launchers.slurm.SlurmLauncher`    a SLURM batch job (local client)
``slurm+ssh``       :class:`~pilotdata.launchers.slurm.SlurmLauncher`    a SLURM batch job, client over SSH
==================  ==========================================  ============================

The registry maps each scheme to a dotted path imported on first use (paramiko is only loaded for
the SSH-based ones). :func:`register_launcher` adds a scheme. Options are checked against the
launcher's :attr:`~pilotdata.launchers.base.Launcher.options`. See ``docs/resources.md``.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from pilotdata.errors import LaunchError, UnknownSchemeError, did_you_mean
from pilotdata.launchers.base import (
    FINAL_JOB_STATES,
    JobState,
    JobStatus,
    Launcher,
    LaunchSpec,
    redact_url,
)

_REGISTRY: dict[str, str] = {
    "fork": "pilotdata.launchers.fork:ForkLauncher",
    "subprocess": "pilotdata.launchers.fork:ForkLauncher",  # BigJob's later name for fork
    "ssh": "pilotdata.launchers.ssh:SshLauncher",
    "slurm": "pilotdata.launchers.slurm:SlurmLauncher",
    "slurm+ssh": "pilotdata.launchers.slurm:SlurmLauncher",
}


def supported_schemes() -> list[str]:
    """The URL schemes :func:`launcher_for` accepts, sorted."""
    return sorted(_REGISTRY)


def register_launcher(scheme: str, target: str) -> None:
    """Map ``scheme`` to a launcher class given as ``"package.module:ClassName"`` (imported lazily)."""
    if ":" not in target:
        raise ValueError(f"launcher target {target!r} must look like 'package.module:ClassName'")
    _REGISTRY[scheme.lower()] = target


def launcher_class(scheme: str) -> type[Launcher]:
    """The launcher class for ``scheme``; :class:`UnknownSchemeError` listing the supported ones."""
    target = _REGISTRY.get(scheme.lower())
    if target is None:
        raise UnknownSchemeError(
            f"no launcher for scheme {scheme!r}{did_you_mean(scheme, _REGISTRY)}; "
            f"supported: {', '.join(supported_schemes())}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise LaunchError(f"launcher {target} for scheme {scheme!r} cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Launcher)):
        raise LaunchError(f"{target} (scheme {scheme!r}) is not a Launcher class")
    return cls


def launcher_for(service_url: str, **options: Any) -> Launcher:
    """A launcher for ``service_url`` (``fork://localhost``, ``ssh://user@host:22``, ``slurm://localhost``,
    ``slurm+ssh://host``) configured with ``options`` (``known_hosts``, ``key_filename``, ``python``,
    ``slurm_conf``...; see each launcher).

    Raises :class:`UnknownSchemeError` for an unknown scheme and :class:`LaunchError` for a malformed URL
    or an unknown option. Connections are opened on first use, not here.
    """
    if not isinstance(service_url, str) or "://" not in service_url:
        raise UnknownSchemeError(
            f"service_url {redact_url(str(service_url))!r} has no scheme; supported: {', '.join(supported_schemes())}"
        )
    try:
        scheme = urlsplit(service_url).scheme
    except ValueError as exc:
        raise LaunchError(f"service_url {redact_url(service_url)!r} is not a valid URL") from exc
    cls = launcher_class(scheme)
    cls.check_options(options)
    return cls(service_url, **options)


__all__ = [
    "FINAL_JOB_STATES",
    "JobState",
    "JobStatus",
    "LaunchSpec",
    "Launcher",
    "launcher_class",
    "launcher_for",
    "redact_url",
    "register_launcher",
    "supported_schemes",
]
