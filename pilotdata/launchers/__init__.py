"""Launchers: start a pilot's agent command line on a resource chosen by the ``service_url`` scheme.

=====================================  ====================================================  =========================
scheme (batch ones also ``+ssh``)      launcher                                              where the command runs
=====================================  ====================================================  =========================
``fork``                               :class:`~pilotdata.launchers.fork.ForkLauncher`       this host, detached
``ssh``                                :class:`~pilotdata.launchers.ssh.SshLauncher`         a host over SSH, detached
``slurm``, ``pbs`` (``torque``,        :class:`~pilotdata.launchers.batch.BatchLauncher`     a batch job; the client
``pbspro``), ``sge``, ``lsf``          with the scheme's :class:`~.batch.BatchSystem`        runs here or, for
                                                                                             ``+ssh``, on a login host
=====================================  ====================================================  =========================

The registry maps each scheme to a dotted path imported on first use (paramiko is only loaded for
the SSH-based ones). :func:`register_launcher` adds a scheme. Options are checked against the
launcher's :attr:`~pilotdata.launchers.base.Launcher.options`. Schemes BigJob knew that have no
launcher here (``condor``, ``ec2+ssh``...) get an error that says so (:data:`NOT_BUILT`). See
``docs/resources.md``.
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
)
from pilotdata.redaction import redact_url

_BATCH = "pilotdata.launchers.batch:BatchLauncher"

_REGISTRY: dict[str, str] = {
    "fork": "pilotdata.launchers.fork:ForkLauncher",
    "subprocess": "pilotdata.launchers.fork:ForkLauncher",  # BigJob's later name for fork
    "ssh": "pilotdata.launchers.ssh:SshLauncher",
    **{
        scheme: _BATCH
        for base in ("slurm", "pbs", "torque", "pbspro", "sge", "lsf")
        for scheme in (base, f"{base}+ssh")
    },
}

NOT_BUILT: dict[str, str] = {
    "condor": "HTCondor pools",
    "condorg": "HTCondor-G",
    "condor+ssh": "HTCondor pools",
    "ec2+ssh": "Amazon EC2 virtual machines",
    "euca+ssh": "Eucalyptus virtual machines",
    "nova+ssh": "OpenStack Nova virtual machines",
    "gce+ssh": "Google Compute Engine virtual machines",
    "gram": "Globus GRAM",
}
"""Schemes BigJob served that have no launcher here, and what they reach (for the error message)."""


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
        what = NOT_BUILT.get(scheme.lower())
        why = (
            f" ({what}: designed, not built; docs/resources.md, 'HTCondor and cloud pilots')"
            if what
            else did_you_mean(scheme, _REGISTRY)
        )
        raise UnknownSchemeError(f"no launcher for scheme {scheme!r}{why}; supported: {', '.join(supported_schemes())}")
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
    ``pbs+ssh://host``, ``sge://localhost``...) configured with ``options`` (``known_hosts``,
    ``key_filename``, ``python``, ``slurm_conf``...; see each launcher).

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
]
