"""The four description classes, driven by a per-field spec (checker, dict key, loader, dumper)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, TypeVar

from pilotdata.descriptions import _checks as c
from pilotdata.descriptions._checks import DataUnitRef
from pilotdata.errors import DescriptionError, did_you_mean

D = TypeVar("D", bound="Description")

_COMMON = ("name", "labels", "affinity_datacenter_label", "affinity_machine_label")
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


def _json(value: Any) -> Any:
    """Default dumper: read-only mappings -> dicts, tuples -> lists, refs -> their JSON form."""
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, DataUnitRef):
        return value.to_json()
    return value


_ALIASES: dict[str, str] = {"total_core_count": "number_of_processes"}
"""Old BigJob keys accepted as synonyms (scripts from BigJob's examples use them)."""


def _resolve_aliases(owner: str, data: Mapping[str, Any], by_key: Mapping[str, Any]) -> Mapping[str, Any]:
    """Map old BigJob keys onto their current names; conflicting values are an error naming both."""
    if not any(k in _ALIASES and _ALIASES[k] in by_key for k in data):
        return data
    out = dict(data)
    for old, new in _ALIASES.items():
        if old in out and new in by_key:
            value = out.pop(old)
            if value is None:
                continue
            if out.get(new) is not None and out[new] != value:
                raise DescriptionError(f"{owner}: {old}={value!r} contradicts {new}={out[new]!r} "
                                       f"({old} is BigJob's old name for {new})", field=old, value=value)
            out[new] = value
    return out


@dataclass(frozen=True, kw_only=True)
class Description:
    """Base of the description classes: the fields every kind has, and the dict conversions.

    Constructing an instance validates and normalises every field (also through
    ``dataclasses.replace``); mappings become read-only, lists become tuples. Labels ``datacenter`` and
    ``machine`` are folded into the ``affinity_*`` fields (they must agree when both are given).
    Instances are immutable.
    """

    name: str | None = _spec(c.text, None)
    labels: Mapping[str, str] = _spec(c.str_map, factory=dict)
    affinity_datacenter_label: str | None = _spec(c.text, None)
    affinity_machine_label: str | None = _spec(c.text, None)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise DescriptionError(f"{_key(f)}: required, got None", field=_key(f), value=None)
                continue
            object.__setattr__(self, f.name, f.metadata["check"](_key(f), value))
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

        A key whose value is ``None`` counts as absent.
        """
        if not isinstance(data, Mapping):
            raise DescriptionError(f"{cls.__name__}: expected a dict, got a {type(data).__name__}")
        by_key = {_key(f): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        data = _resolve_aliases(cls.__name__, data, by_key)
        for key, value in data.items():
            f = by_key.get(key) if isinstance(key, str) else None
            if f is None:
                hint = did_you_mean(key, by_key) if isinstance(key, str) else ""
                raise DescriptionError(f"unknown key {key!r} in {cls.__name__}{hint}", field=str(key))
            if value is not None:
                load = f.metadata.get("load")
                kwargs[f.name] = load(key, value) if load else value
        for f in fields(cls):
            if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
                raise DescriptionError(f"{cls.__name__}: missing required key {_key(f)!r}", field=_key(f))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The normalised JSON form with BigJob key names; ``from_dict(d.to_dict()) == d``.

        ``None`` fields are left out; no secret is ever included (see
        :attr:`PilotDataDescription.storage_options`).
        """
        out: dict[str, Any] = {}
        ordered = sorted(fields(self), key=lambda f: f.name in _COMMON)
        for f in ordered:
            value = getattr(self, f.name)
            if value is not None:
                dump = f.metadata.get("dump") or _json
                dumped = dump(value)
                if dumped is not None:
                    out[_key(f)] = dumped
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


@dataclass(frozen=True, kw_only=True)
class PilotComputeDescription(Description):
    """What a pilot needs: a resource URL (``fork://localhost``, ``ssh://user@host:22``,
    ``slurm://localhost``, ``slurm+ssh://host``), processes, walltime in minutes, batch queue / project.
    """

    service_url: str = _spec(c.resource_url)
    number_of_processes: int = _spec(c.integer(1), 1)
    processes_per_node: int | None = _spec(c.integer(1), None)
    walltime: int | float | None = _spec(c.positive_number, None)
    working_directory: str | None = _spec(c.text, None)
    queue: str | None = _spec(c.text, None)
    project: str | None = _spec(c.text, None)

    def _check(self) -> None:
        _check_ppn(self)


def _size_from_dict(path: str, value: Any) -> int:
    return c.size_bytes(path, value, int_unit=10**6)


def _dump_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    return c.public_options(options) or None


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
    """

    service_url: str = _spec(c.storage_url)
    size_bytes: int | None = _spec(c.size_bytes, None, key="size", load=_size_from_dict, dump=c.format_size)
    storage_options: Mapping[str, Any] = _spec(
        c.storage_options, factory=dict, dump=_dump_options, repr=False
    )


@dataclass(frozen=True, kw_only=True)
class ComputeUnitDescription(Description):
    """One task. Launched without a shell: ``executable`` plus ``arguments`` (a list) form the argv.

    ``environment``: ``{"K": "V"}`` or ``["K=V", ...]``. ``spmd_variation``: ``"single"`` or ``"mpi"``.
    ``input_data``: DU ids (the whole DU; BigJob DU URLs are reduced to their id) or
    ``{du_id: [file names]}`` for a subset. ``output_data``: ``{du_id: [globs]}`` of sandbox files to add
    to that DU. ``output`` / ``error``: stdout / stderr file names in the sandbox. ``timeout`` in
    seconds; ``max_retries``: how often a failed run may be retried (None: the service's default).
    """

    executable: str = _spec(c.text)
    arguments: tuple[str, ...] = _spec(c.string_list, ())
    environment: Mapping[str, str] = _spec(c.environment, factory=dict)
    working_directory: str | None = _spec(c.text, None)
    number_of_processes: int = _spec(c.integer(1), 1)
    processes_per_node: int | None = _spec(c.integer(1), None)
    spmd_variation: str = _spec(c.choice("single", "mpi"), "single")
    input_data: tuple[DataUnitRef, ...] = _spec(c.data_refs(subset_required=False), ())
    output_data: tuple[DataUnitRef, ...] = _spec(c.data_refs(subset_required=True), ())
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
    """

    file_urls: tuple[str, ...] = _spec(c.file_urls, ())


def affinity_path(desc: Description) -> tuple[str, ...]:
    """The label path placement measures tree distance on: ``()``, ``(dc,)`` or ``(dc, machine)``."""
    if desc.affinity_datacenter_label is None:
        return ()
    if desc.affinity_machine_label is None:
        return (desc.affinity_datacenter_label,)
    return (desc.affinity_datacenter_label, desc.affinity_machine_label)


def affinity_labels(desc: Description) -> dict[str, str]:
    """User labels plus ``datacenter`` / ``machine`` from the affinity fields (when set)."""
    merged = dict(desc.labels)
    for label, attr in _RESERVED_LABELS.items():
        value = getattr(desc, attr)
        if value is not None:
            merged[label] = value
    return merged
