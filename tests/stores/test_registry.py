"""The scheme registry: built-ins, run-time registration, entry points, and its errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import pytest
from fsspec.implementations.memory import MemoryFileSystem

import pilotdata.stores as stores
from pilotdata.errors import MissingDependencyError, UnknownSchemeError
from pilotdata.stores import Store, available_schemes, get_store_class, open_store, register_store


class MemoryStore(Store):
    """A store over fsspec's in-memory filesystem: proves the base class serves outside backends."""

    def _parse(self, url: str, parts: SplitResult) -> tuple[str, str]:
        root = "/" + (parts.netloc + parts.path).strip("/")
        return root, f"{self.scheme}://{root.lstrip('/')}"

    def _make_fs(self) -> Any:
        return MemoryFileSystem()


@pytest.fixture(autouse=True)
def _private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test disappear after it."""
    monkeypatch.setattr(stores, "_registered", {})


def test_builtin_schemes() -> None:
    assert {"file", "ssh", "sftp", "s3", "irods"} <= set(available_schemes())
    assert get_store_class("SFTP") is get_store_class("ssh")


def test_unknown_scheme_lists_supported_schemes() -> None:
    with pytest.raises(UnknownSchemeError) as caught:
        open_store("gsiftp://host/data")
    message = str(caught.value)
    assert "'gsiftp'" in message
    assert "supported schemes: file, irods, s3, sftp, ssh" in message
    assert isinstance(caught.value, ValueError)


def test_unknown_scheme_suggests_and_hides_the_password() -> None:
    with pytest.raises(UnknownSchemeError) as caught:
        open_store("sftpp://user:hunter2@host/data")
    assert "did you mean 'sftp'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_register_store_class_and_dotted_path() -> None:
    register_store("mem", MemoryStore)
    store = open_store("mem://area/pd", labels={"x": "1"})
    assert isinstance(store, MemoryStore) and store.url == "mem://area/pd" and "mem" in available_schemes()
    with store.open("f.txt", "wb") as handle:
        handle.write(b"in memory")
    assert store.files() == {"f.txt": 9}
    store.rm("f.txt")

    register_store("mem2", f"{__name__}.MemoryStore")
    assert get_store_class("mem2") is MemoryStore


def test_register_refuses_silent_replacement_and_bad_names() -> None:
    register_store("mem", MemoryStore)
    with pytest.raises(ValueError, match="already registered"):
        register_store("mem", MemoryStore)
    with pytest.raises(ValueError, match="already registered"):
        register_store("s3", MemoryStore)
    register_store("mem", MemoryStore, clobber=True)
    with pytest.raises(ValueError, match="invalid URL scheme"):
        register_store("9p", MemoryStore)


def test_registered_target_must_be_a_store(tmp_path: Path) -> None:
    register_store("notastore", "pathlib.Path")
    with pytest.raises(TypeError, match="not a pilotdata Store"):
        open_store("notastore://x")


def _write_plugin(tmp_path: Path, module: str, body: str, entry_points: str | None = None) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
    if entry_points is not None:
        info = tmp_path / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_entry_point_plugin_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_plugin(
        tmp_path, "pd_plugin_store",
        """
        from tests.stores.test_registry import MemoryStore

        class PluginStore(MemoryStore):
            pass
        """,
        "[pilotdata.stores]\nplugmem = pd_plugin_store:PluginStore\ns3 = pd_plugin_store:PluginStore\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugmem" in available_schemes()
    store = open_store("plugmem://bucket/pd")
    assert type(store).__name__ == "PluginStore"
    # an entry point cannot take over a built-in scheme
    assert get_store_class("s3").__name__ == "S3Store"


def test_missing_dependency_of_a_plugin_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_plugin(tmp_path, "pd_needs_missing", "import pd_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_store("needy", "pd_needs_missing:Store")
    with pytest.raises(MissingDependencyError) as caught:
        open_store("needy://x")
    assert "pip install pd_not_installed_anywhere" in str(caught.value)
    assert isinstance(caught.value, ImportError)
    register_store("needy2", "pd_needs_missing:Store", extra="needy")
    with pytest.raises(MissingDependencyError, match=r"pip install 'pilot-data\[needy\]'"):
        open_store("needy2://x")


def test_missing_s3fs_gives_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pilotdata.stores.s3", raising=False)
    monkeypatch.setitem(sys.modules, "s3fs", None)  # what the import system does for an absent package
    with pytest.raises(MissingDependencyError) as caught:
        open_store("s3://bucket/prefix")
    assert "s3fs" in str(caught.value)
    assert "pip install 'pilot-data[s3]'" in str(caught.value)
