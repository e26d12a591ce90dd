"""BigJob's editable descriptions: dicts built empty and filled by attribute or by item.

BigJob's ``PilotComputeDescription``, ``ComputeUnitDescription``, ``DataUnitDescription`` and
``PilotDataDescription`` were ``dict`` subclasses whose attributes are their items, so scripts write::

    pcd = PilotComputeDescription()
    pcd.service_url = "fork://localhost"
    pcd["walltime"] = 10

These classes are that: plain dicts (``pcd["x"]``, ``.get``, ``in``, iteration, ``json.dumps``, ``{**pcd}``
all work, and they go wherever a dict description is accepted). Nothing is checked while they are
filled; they are validated when used (``create_pilot``, ``submit_compute_unit`` ...), by the typed
class of the same name in :mod:`pilotdata.descriptions`, with the same errors naming the field (a
misspelt attribute gets a did-you-mean hint there). :meth:`EditableDescription.validate` does it on
demand and returns that typed, immutable description.

A name that was never set reads as :class:`AttributeError` (``hasattr`` works), not as ``None``.
``repr`` masks the values of secret-looking keys (``secret_access_key`` ...).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pilotdata.descriptions import _models as m
from pilotdata.descriptions._checks import is_secret_key


class EditableDescription(dict[str, Any]):
    """A description dict with attribute access (see the module docstring)."""

    typed: ClassVar[type[m.Description]] = m.Description
    """The typed description class this one is validated into."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name!r} set") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__}: description keys do not start with '_' ({name!r})")
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name!r} set") from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(k for k in self if isinstance(k, str))})

    def __repr__(self) -> str:
        shown = {k: ("***" if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else v)
                 for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    def copy(self) -> EditableDescription:
        """A shallow copy of the same class."""
        return type(self)(self)

    def validate(self) -> m.Description:
        """The typed, validated description (:class:`~pilotdata.errors.DescriptionError` names a bad field)."""
        return self.typed.from_dict(self)


class PilotComputeDescription(EditableDescription):
    """BigJob's pilot description, filled by attribute or item; see
    :class:`pilotdata.descriptions.PilotComputeDescription` for the keys."""

    typed = m.PilotComputeDescription


class PilotDataDescription(EditableDescription):
    """BigJob's PilotData description, filled by attribute or item; see
    :class:`pilotdata.descriptions.PilotDataDescription` for the keys."""

    typed = m.PilotDataDescription


class ComputeUnitDescription(EditableDescription):
    """BigJob's ComputeUnit description, filled by attribute or item; see
    :class:`pilotdata.descriptions.ComputeUnitDescription` for the keys (``shell`` among them)."""

    typed = m.ComputeUnitDescription


class DataUnitDescription(EditableDescription):
    """BigJob's DataUnit description, filled by attribute or item; see
    :class:`pilotdata.descriptions.DataUnitDescription` for the keys."""

    typed = m.DataUnitDescription


__all__ = [
    "ComputeUnitDescription",
    "DataUnitDescription",
    "EditableDescription",
    "PilotComputeDescription",
    "PilotDataDescription",
]
