"""Safe relative names: the rules, and a property test that no accepted name escapes the root."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotdata.errors import UnsafePathError
from pilotdata.stores.paths import join_under, safe_relpath
from tests.stores.conformance import UNSAFE_NAMES


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a", "a"), ("a/b", "a/b"), ("./a//b/", "a/b"), ("a/./b", "a/b"), ("...", "..."), ("a..b/c", "a..b/c"),
     ("~user", "~user"), ("é/ü", "é/ü"), ("ab:c", "ab:c")],
)
def test_accepted_names_are_normalised(name: str, expected: str) -> None:
    assert safe_relpath(name) == expected


@pytest.mark.parametrize("name", [*UNSAFE_NAMES, None, 3, b"a"])
def test_rejected_names_are_quoted_in_the_error(name: object) -> None:
    with pytest.raises(UnsafePathError) as caught:
        safe_relpath(name)
    assert repr(name) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_join_under_root_slash_and_prefix() -> None:
    assert join_under("/", "a/b") == "/a/b"
    assert join_under("bucket/prefix/", "x") == "bucket/prefix/x"
    with pytest.raises(UnsafePathError, match=r"'\.\./x'"):
        join_under("/data", "../x")


@pytest.mark.parametrize("name", ["./a:", ".//C:/x", "./c:"])
def test_a_drive_behind_dot_components_is_refused_too(name: str) -> None:
    with pytest.raises(UnsafePathError, match="Windows drive"):
        safe_relpath(name)


names = st.text(alphabet=st.sampled_from(["a", "b", ".", "/", "\\", "\x00", ":", "~", " ", "é"]), max_size=12)


@given(names)
def test_no_accepted_name_escapes_the_root(name: str) -> None:
    try:
        clean = safe_relpath(name)
    except UnsafePathError:
        return
    joined = join_under("/srv/pd", name)
    assert joined == "/srv/pd/" + clean
    assert posixpath.normpath(joined).startswith("/srv/pd/")
    assert ".." not in clean.split("/") and "\\" not in clean and "\x00" not in clean
    assert safe_relpath(clean) == clean
