"""The four description classes, driven by a per-field spec (checker, dict key, loader, dumper)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from pilotdata.descriptions import _checks as c
from pilotdata.descriptions._checks import DataUnitRef, FileTransfer
from pilotdata.errors import DescriptionError, did_you_mean

D = TypeVar("D", bound="Description")

_COMMON = ("name", "labels", "affinity_datacenter_label", "affinity_machine_label")
_CPU_BINDINGS = ("auto", "cores", "none")
_RESERVED_LABELS = {"datacenter": "affinity_datacenter_label", "machine": "affinity_machine_label"}


def _spec(
    check: c.Check,
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    key: str | None = None,
    load: c.Check | None = None,
    dump: Callable[[Any], Any] | None = None,
    repr: bool = True,
) -> Any:
    """A dataclass field whose value ``check`` validates; ``key`` is its dict name if not the attribute's.

    ``load`` converts a dict value before ``check`` (only in :meth:`Description.from_dict`); ``dump``
    turns the attribute into its JSON form in :meth:`Description.to_dict`.
    """
    meta = {"check": check, "key": key, "load": load, "dump": dump}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=repr)
    return field(default=default, metadata=meta, repr=repr)


def _key(f: Field[Any]) -> str:
    return f.metadata.get("key") or f.name


@dataclass(frozen=True)
class _FieldSpec:
    """What validating and dumping one field needs, read once per class from its dataclass field."""

    name: str
    key: str
    check: c.Check
    load: c.Check | None
    dump: Callable[[Any], Any]
    required: bool
    default: Any
    """The field's default (a factory's product for a factory field), ``MISSING`` when it has none."""
    checked_default: Any
    """``check`` applied to :attr:`default` once: a defaulted field is not checked again per instance (a
    bulk submission validates thousands of descriptions; the defaults' checks were two thirds of it)."""

    def is_default(self, value: Any) -> bool:
        """Whether ``value`` is this field's default (its check's result is then :attr:`checked_default`).

        An equal value of the same type counts, and an empty list for an empty tuple: a record read back
        from JSON (an agent reads every CU's) gives ``"stdout"``, ``{}`` or ``[]`` as new objects, and a
        check depends on the value alone.
        """
        default = self.default
        if default is MISSING:
            return False
        if value is default:
            return True
        kind = type(value)
        if kind is list and default == ():
            return not value
        return kind is type(default) and value == default


def _spec_of(f: Field[Any]) -> _FieldSpec:
    key, check = _key(f), f.metadata["check"]
    factory = f.default_factory
    default = factory() if callable(factory) else f.default
    checked = check(key, default) if default is not MISSING and default is not None else default
    return _FieldSpec(f.name, key, check, f.metadata.get("load"), f.metadata.get("dump") or _json,
                      default is MISSING, default, checked)


_SPECS: dict[type, tuple[_FieldSpec, ...]] = {}
_BY_KEY: dict[type, dict[str, _FieldSpec]] = {}
_DUMP_ORDER: dict[type, tuple[_FieldSpec, ...]] = {}


def _specs(cls: type) -> tuple[_FieldSpec, ...]:
    """The field specs of a description class, in field order (``dataclasses.fields`` costs per call)."""
    found = _SPECS.get(cls)
    if found is None:
        found = _SPECS[cls] = tuple(_spec_of(f) for f in fields(cls))
    return found


def _by_key(cls: type) -> dict[str, _FieldSpec]:
    found = _BY_KEY.get(cls)
    if found is None:
        found = _BY_KEY[cls] = {spec.key: spec for spec in _specs(cls)}
    return found


def _dump_order(cls: type) -> tuple[_FieldSpec, ...]:
    """Kind-specific fields first, then the common ones (the order of :meth:`Description.to_dict`)."""
    found = _DUMP_ORDER.get(cls)
    if found is None:
        found = _DUMP_ORDER[cls] = tuple(sorted(_specs(cls), key=lambda spec: spec.name in _COMMON))
    return found


def _json(value: Any) -> Any:
    """Default dumper: read-only mappings -> dicts, tuples -> lists, refs -> their JSON form."""
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, (DataUnitRef, FileTransfer)):
        return value.to_json()
    return value


def _unset(value: Any) -> bool:
    """``None`` or ``""``: how BigJob scripts leave a setting unset (``QUEUE = ""`` in its tutorials)."""
    return value is None or (isinstance(value, str) and value == "")


@dataclass(frozen=True)
class Rename:
    """A BigJob key read as one of ours: ``key`` (the field's dict key), after ``convert`` if given."""

    key: str
    convert: c.Check | None = None
    why: str = ""
    """How the BigJob key relates to ours, for the error when both are given and disagree."""


def _resolve_renames(owner: str, data: Mapping[str, Any], renames: Mapping[str, Rename]) -> Mapping[str, Any]:
    """Map BigJob's keys onto ours; an unset value is dropped; conflicting values are an error naming both."""
    if not any(k in renames for k in data):
        return data
    out = dict(data)
    for old, rename in renames.items():
        if old not in out:
            continue
        value = out.pop(old)
        if _unset(value):
            continue
        if rename.convert is not None:
            value = rename.convert(old, value)
        current = out.get(rename.key)
        if not _unset(current) and current != value:
            why = rename.why or f"{old} is BigJob's name for {rename.key}"
            raise DescriptionError(f"{owner}: {old}={value!r} contradicts {rename.key}={current!r} ({why})",
                                   field=old, value=value)
        out[rename.key] = value
    return out


@dataclass(frozen=True, kw_only=True)
class Description:
    """Base of the description classes: the fields every kind has, and the dict conversions.

    Constructing an instance validates and normalises every field (also through
    ``dataclasses.replace``); mappings become read-only, lists become tuples. Labels ``datacenter`` and
    ``machine`` are folded into the ``affinity_*`` fields (they must agree when both are given).
    Instances are immutable.
    """

    _renames: ClassVar[Mapping[str, Rename]] = {}
    """BigJob keys (and SAGA spellings) read as one of this kind's keys."""
    _unsupported: ClassVar[Mapping[str, str]] = {}
    """BigJob keys this kind knows but cannot honour: key -> why (the error message)."""

    name: str | None = _spec(c.name, None)
    labels: Mapping[str, str] = _spec(c.str_map, factory=dict)
    affinity_datacenter_label: str | None = _spec(c.text, None)
    affinity_machine_label: str | None = _spec(c.text, None)

    def __post_init__(self) -> None:
        for spec in _specs(type(self)):
            value = getattr(self, spec.name)
            if value is None:
                if spec.required:
                    raise DescriptionError(f"{spec.key}: required, got None", field=spec.key, value=None)
                continue
            if spec.is_default(value):
                if value is not spec.checked_default:
                    object.__setattr__(self, spec.name, spec.checked_default)
                continue
            object.__setattr__(self, spec.name, spec.check(spec.key, value))
        self._fold_labels()
        if self.affinity_machine_label is not None and self.affinity_datacenter_label is None:
            raise DescriptionError(
                "affinity_machine_label: needs affinity_datacenter_label too (affinity labels form a "
                "tree: datacenter > machine)",
                field="affinity_machine_label",
                value=self.affinity_machine_label,
            )
        self._check()

    def _fold_labels(self) -> None:
        labels = dict(self.labels)
        for label, attr in _RESERVED_LABELS.items():
            if label not in labels:
                continue
            value, current = labels.pop(label), getattr(self, attr)
            if current is not None and current != value:
                raise DescriptionError(
                    f"labels.{label}: {value!r} contradicts {attr}={current!r}",
                    field=f"labels.{label}",
                    value=value,
                )
            object.__setattr__(self, attr, c.text(f"labels.{label}", value))
        if len(labels) != len(self.labels):
            object.__setattr__(self, "labels", c.str_map("labels", labels))

    def _check(self) -> None:
        """Cross-field checks of a subclass (fields are already normalised)."""

    @classmethod
    def from_dict(cls: type[D], data: Mapping[str, Any]) -> D:
        """Validate a BigJob-style dict; unknown keys are errors (with a did-you-mean hint).

        A key whose value is ``None`` or ``""`` counts as absent (BigJob's scripts leave settings unset
        that way), except that a required key is still required. BigJob's other names for a key (see
        ``_renames``) are read as ours; BigJob keys this kind cannot honour are errors saying why.
        """
        if not isinstance(data, Mapping):
            raise DescriptionError(f"{cls.__name__}: expected a dict, got a {type(data).__name__}")
        by_key = _by_key(cls)
        kwargs: dict[str, Any] = {}
        data = cls._from_bigjob(_resolve_renames(cls.__name__, data, cls._renames))
        for key, value in data.items():
            spec = by_key.get(key) if isinstance(key, str) else None
            if spec is None:
                if isinstance(key, str) and key in cls._unsupported:
                    raise DescriptionError(f"{key}: {cls._unsupported[key]}", field=key)
                hint = did_you_mean(key, by_key) if isinstance(key, str) else ""
                raise DescriptionError(f"unknown key {key!r} in {cls.__name__}{hint}", field=str(key))
            if value is None or (_unset(value) and not spec.required):
                continue
            kwargs[spec.name] = spec.load(key, value) if spec.load else value
        for spec in _specs(cls):
            if spec.required and spec.name not in kwargs:
                raise DescriptionError(f"{cls.__name__}: missing required key {spec.key!r}", field=spec.key)
        return cls(**kwargs)

    @classmethod
    def _from_bigjob(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """A kind's own translation of BigJob keys that are not plain renames (after the renames)."""
        return data

    def to_dict(self) -> dict[str, Any]:
        """The normalised JSON form with BigJob key names; ``from_dict(d.to_dict()) == d``.

        ``None`` fields are left out; no secret is ever included (see
        :attr:`PilotDataDescription.storage_options`).
        """
        out: dict[str, Any] = {}
        for spec in _dump_order(type(self)):
            value = getattr(self, spec.name)
            if value is not None:
                dumped = spec.dump(value)
                if dumped is not None:
                    out[spec.key] = dumped
        return out

    @classmethod
    def coerce(cls: type[D], value: D | Mapping[str, Any]) -> D:
        """``value`` itself if it is already a ``cls``, else :meth:`from_dict` of it."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Description):
            raise DescriptionError(f"expected a {cls.__name__} or a dict, got a {type(value).__name__}")
        return cls.from_dict(value)


def _check_ppn(desc: PilotComputeDescription | ComputeUnitDescription) -> None:
    ppn = desc.processes_per_node
    if ppn is not None and ppn > desc.number_of_processes:
        raise DescriptionError(
            f"processes_per_node: {ppn} exceeds number_of_processes ({desc.number_of_processes})",
            field="processes_per_node",
            value=ppn,
        )


_CLOUD = ("applies to BigJob's cloud VM pilots (ec2+ssh, euca+ssh, nova+ssh, gce+ssh), which pilot-data "
          "does not start: start the VM yourself and give its address as service_url 'ssh://user@host'")


def _minutes_to_seconds(path: str, value: Any) -> int | float:
    return c.positive_number(path, value) * 60


@dataclass(frozen=True, kw_only=True)
class PilotComputeDescription(Description):
    """What a pilot needs: a resource URL (``fork://localhost``, ``ssh://user@host:22``,
    ``slurm://localhost``, ``slurm+ssh://host``), processes, walltime in minutes, batch queue / project.

    ``file_transfer``: BigJob's ``["SOURCE > TARGET", ...]``: files fetched once per pilot (by its
    agent, on its host) and put into the working directory of every CU it runs.
    ``number_executor_threads`` (BigJob: the agent's thread pool that started CUs) is accepted and has no
    effect: the agent runs every CU on a thread of its own, up to its slots. ``spmd_variation`` (BigJob
    passed it to the batch system) is ``single`` or ``mpi`` and has no effect on the pilot: each CU says
    how it is launched. ``output`` / ``error``: the agent's stdout / stderr files (relative to the working
    directory). ``cpu_binding`` (``auto``, ``cores`` or ``none``): whether the CUs of the agent's node run
    on their slots' CPUs (:mod:`agent.binding`); ``auto``, the default, binds when the slots there cover
    the CPUs the agent may use. BigJob's ``allocation`` is ``project``, ``wall_time_limit`` is ``walltime``,
    ``processes_per_host`` is ``processes_per_node``, ``total_core_count`` is ``number_of_processes``.
    """

    _renames: ClassVar[Mapping[str, Rename]] = {
        "total_core_count": Rename("number_of_processes"),
        "allocation": Rename("project", why="allocation is BigJob's name for the project / account to charge"),
        "wall_time_limit": Rename("walltime", why="wall_time_limit is SAGA's name for walltime, in minutes"),
        "processes_per_host": Rename("processes_per_node"),
    }
    CPU_BINDINGS: ClassVar[tuple[str, ...]] = _CPU_BINDINGS
    """The values of ``cpu_binding`` (what each does: :mod:`agent.binding`)."""
    _unsupported: ClassVar[Mapping[str, str]] = {
        **{key: _CLOUD for key in ("vm_id", "vm_ssh_username", "vm_ssh_keyname", "vm_ssh_keyfile", "vm_type",
                                   "vm_location", "region", "access_key_id", "secret_access_key")},
        "candidate_hosts": "BigJob passed it to Condor glide-in pilots only, and pilot-data has no Condor "
                           "launcher; for SLURM pilots choose the partition with queue",
        "input": "a pilot's agent reads no stdin (BigJob ignored it too)",
    }

    service_url: str = _spec(c.resource_url)
    number_of_processes: int = _spec(c.integer(1, c.MAX_PROCESSES), 1)
    processes_per_node: int | None = _spec(c.integer(1, c.MAX_PROCESSES), None)
    walltime: int | float | None = _spec(c.positive_number, None)
    working_directory: str | None = _spec(c.text, None)
    queue: str | None = _spec(c.text, None)
    project: str | None = _spec(c.text, None)
    file_transfer: tuple[FileTransfer, ...] = _spec(c.file_transfers, (), dump=lambda v: _json(v) or None)
    number_executor_threads: int | None = _spec(c.integer(1), None)
    spmd_variation: str | None = _spec(c.choice("single", "mpi"), None)
    output: str | None = _spec(c.text, None)
    error: str | None = _spec(c.text, None)
    cpu_binding: str | None = _spec(c.choice(*_CPU_BINDINGS), None)

    def _check(self) -> None:
        _check_ppn(self)


def _size_from_dict(path: str, value: Any) -> int:
    return c.size_bytes(path, value, int_unit=10**6)


def _dump_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    return c.public_options(options) or None


_S3_CREDENTIALS = {"access_key_id": "key", "secret_access_key": "secret"}
"""BigJob's S3 PilotData credential keys -> s3fs storage options (secret by name: never stored)."""


def _scheme(url: Any) -> str:
    return url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else "file"


@dataclass(frozen=True, kw_only=True)
class PilotDataDescription(Description):
    """A storage allocation: URL, optional quota, affinity, and fsspec ``storage_options``.

    ``service_url``: ``file:///path`` (a bare absolute path is turned into one), ``ssh://``, ``sftp://``,
    ``s3://bucket/prefix``, ``irods://zone/path``. A password in the URL is rejected.

    ``size`` (dict key) / ``size_bytes`` (attribute): the quota. In a dict an integer is **megabytes**
    (10**6 bytes), as in BigJob; a string carries its unit: ``"10GB"`` (10**10), ``"512MiB"`` (2**29),
    ``"100B"``. The attribute is always bytes, and ``to_dict`` writes the shortest exact string
    (``"10GB"``), which reads back to the same byte count. Passed to the constructor directly, an
    integer ``size_bytes`` means bytes.

    ``storage_options``: passed to the fsspec filesystem as given (it may hold credentials, which stay
    in this process: not in ``repr`` either). The rule for :meth:`to_dict`: every key whose lower-cased
    name contains ``key``, ``secret``, ``password``, ``passwd``, ``token``, ``passphrase`` or
    ``credential``, or starts with ``aws_``, is dropped at any depth, and passwords in URL values are
    masked. So ``from_dict(d.to_dict())`` equals ``d`` only when ``d`` holds no secret options.

    BigJob's credential keys: ``access_key_id`` / ``secret_access_key`` (``s3://`` only) become the
    storage options ``key`` / ``secret``, and ``region`` becomes ``client_kwargs.region_name``;
    ``userkey`` (``ssh://`` / ``sftp://`` only) is the private key file this process signs in with. None
    of them is ever written by :meth:`to_dict` (so never to coordination or history); other processes
    (agents) use their own credentials.
    """

    service_url: str = _spec(c.storage_url)
    size_bytes: int | None = _spec(c.size_bytes, None, key="size", load=_size_from_dict, dump=c.format_size)
    storage_options: Mapping[str, Any] = _spec(
        c.storage_options, factory=dict, dump=_dump_options, repr=False
    )
    userkey: str | None = _spec(c.text, None, dump=lambda _: None, repr=False)

    @classmethod
    def _from_bigjob(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        given = [k for k in (*_S3_CREDENTIALS, "region") if k in data]
        if not given:
            return data
        out = {k: v for k, v in data.items() if k not in given}
        wanted = {k: data[k] for k in given if not _unset(data[k])}
        if not wanted:
            return out
        scheme = _scheme(data.get("service_url"))
        if scheme != "s3":
            key = next(iter(wanted))
            raise DescriptionError(f"{key}: only for s3:// PilotData (got a {scheme}:// service_url); other "
                                   "stores take their credentials in storage_options", field=key)
        options = data.get("storage_options")
        if options is not None and not isinstance(options, Mapping):
            return out  # the storage_options check names the problem
        merged: dict[str, Any] = dict(options or {})
        for key, value in wanted.items():
            if not isinstance(value, str):  # never echo the value: it may be a secret
                raise DescriptionError(f"{key}: expected a string", field=key)
            if key == "region":
                client_kwargs = merged.get("client_kwargs") or {}
                if not isinstance(client_kwargs, Mapping):
                    raise DescriptionError("storage_options.client_kwargs: expected a dict",
                                           field="storage_options.client_kwargs")
                merged["client_kwargs"] = {**client_kwargs, "region_name": value}
                continue
            option = _S3_CREDENTIALS[key]
            if merged.get(option) not in (None, value):
                raise DescriptionError(f"{key}: contradicts storage_options.{option} (both given, different)",
                                       field=key)
            merged[option] = value
        out["storage_options"] = merged
        return out

    def _check(self) -> None:
        if self.userkey is not None and _scheme(self.service_url) not in ("ssh", "sftp"):
            raise DescriptionError(
                f"userkey: only for ssh:// and sftp:// PilotData (got {_scheme(self.service_url)}://)",
                field="userkey",
            )


@dataclass(frozen=True, kw_only=True)
class ComputeUnitDescription(Description):
    """One task: ``executable`` plus ``arguments`` (a list).

    ``shell``: False runs the argv without a shell (``$VAR`` / ``${VAR}`` are still expanded from the
    environment); True runs ``executable`` and ``arguments`` joined by spaces as one ``/bin/sh`` command
    line, as BigJob's agent did (so ``[""]`` vanishes and globs, ``$VAR``, quotes, ``>``, ``|`` work as
    typed in a terminal). The Pilot-API's submit calls default to True for dicts that do not say
    (BigJob's scripts); this class defaults to False, as does ``pdata submit``.

    ``environment``: ``{"K": "V"}`` or ``["K=V", ...]``. ``spmd_variation``: ``"single"`` or ``"mpi"``.
    ``input_data``: DU ids (the whole DU; BigJob DU URLs are reduced to their id) or
    ``{du_id: [file names]}`` for a subset. ``output_data``: ``{du_id: [globs]}`` of sandbox files to add
    to that DU. ``output`` / ``error``: stdout / stderr file names in the sandbox. ``timeout`` in
    seconds; ``max_retries``: how often a failed run may be retried (None: the service's default).
    ``file_transfer``: BigJob's ``["SOURCE > TARGET", ...]``, files the agent fetches into the sandbox
    before the CU starts (a failed fetch fails the CU). BigJob's ``total_core_count`` /
    ``total_cpu_count`` are ``number_of_processes``; SAGA's ``wall_time_limit`` (minutes) is ``timeout``.
    """

    _renames: ClassVar[Mapping[str, Rename]] = {
        "total_core_count": Rename("number_of_processes"),
        "total_cpu_count": Rename("number_of_processes"),
        "wall_time_limit": Rename("timeout", _minutes_to_seconds,
                                  "wall_time_limit is SAGA's limit in minutes, timeout is in seconds"),
    }
    _unsupported: ClassVar[Mapping[str, str]] = {
        "input": "a CU reads no stdin (BigJob's agent never connected it either): pass the file as an "
                 "argument, or with shell=True use '< FILE' in the arguments",
    }

    executable: str = _spec(c.text)
    arguments: tuple[str, ...] = _spec(c.string_list, ())
    shell: bool = _spec(c.boolean, False)
    environment: Mapping[str, str] = _spec(c.environment, factory=dict)
    working_directory: str | None = _spec(c.text, None)
    number_of_processes: int = _spec(c.integer(1, c.MAX_PROCESSES), 1)
    processes_per_node: int | None = _spec(c.integer(1, c.MAX_PROCESSES), None)
    spmd_variation: str = _spec(c.choice("single", "mpi"), "single")
    input_data: tuple[DataUnitRef, ...] = _spec(c.data_refs(subset_required=False), ())
    output_data: tuple[DataUnitRef, ...] = _spec(c.data_refs(subset_required=True), ())
    file_transfer: tuple[FileTransfer, ...] = _spec(c.file_transfers, (), dump=lambda v: _json(v) or None)
    output: str = _spec(c.relative_path, "stdout")
    error: str = _spec(c.relative_path, "stderr")
    timeout: int | float | None = _spec(c.positive_number, None)
    max_retries: int | None = _spec(c.integer(0), None)

    def _check(self) -> None:
        _check_ppn(self)
        if self.output == self.error:
            raise DescriptionError(
                f"error: same file as output ({self.output!r}); give stdout and stderr different names",
                field="error",
                value=self.error,
            )


@dataclass(frozen=True, kw_only=True)
class DataUnitDescription(Description):
    """An immutable set of files: ``file_urls`` are local paths or URLs (empty for an output DU).

    Files are stored by their last path component, so two entries may not share a file name.
    ``number_of_replicas`` (BigJob): keep that many replicas, on different PilotData chosen by labels
    and free quota (the first where the DU is submitted, the others copied store to store).
    """

    file_urls: tuple[str, ...] = _spec(c.file_urls, ())
    number_of_replicas: int | None = _spec(c.integer(1), None)


def site_of(labels: Mapping[str, Any]) -> tuple[str, ...]:
    """The label path placement measures tree distance on: ``()``, ``(dc,)`` or ``(dc, machine)``.

    Read from the ``datacenter`` / ``machine`` labels of a record (pilots and PilotData keep their
    :func:`affinity_labels`); shorter when labels are missing.
    """
    dc = labels.get("datacenter")
    machine = labels.get("machine")
    if not dc:
        return ()
    return (str(dc), str(machine)) if machine else (str(dc),)


def affinity_path(desc: Description) -> tuple[str, ...]:
    """:func:`site_of` a description: the path of its affinity labels."""
    return site_of(affinity_labels(desc))


def affinity_labels(desc: Description) -> dict[str, str]:
    """User labels plus ``datacenter`` / ``machine`` from the affinity fields (when set)."""
    merged = dict(desc.labels)
    for label, attr in _RESERVED_LABELS.items():
        value = getattr(desc, attr)
        if value is not None:
            merged[label] = value
    return merged
