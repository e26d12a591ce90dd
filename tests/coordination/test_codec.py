"""The coordination codec: values encode as compact JSON and a value that is not JSON names its field; every
Kind is accepted by name, an unknown one is told all of them; a CU's creation detail reads the record keys
:mod:`pilotdata.records` spells."""

from __future__ import annotations

import json

import pytest

from pilotdata.coordination._codec import creation_detail, dumps, kind_name, loads_many
from pilotdata.errors import DescriptionError
from pilotdata.records import DESCRIPTION, RUN
from pilotdata.states import Kind


@pytest.mark.parametrize("kind", list(Kind), ids=[k.value for k in Kind])
def test_every_kind_is_known_by_enum_and_by_name(kind: Kind) -> None:
    assert kind_name(kind) == kind.value == kind_name(kind.value)


@pytest.mark.parametrize("bad", ["job", "CU", "", None])
def test_an_unknown_kind_lists_every_kind(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        kind_name(bad)  # type: ignore[arg-type]
    assert str(info.value) == f"unknown entity kind {str(bad)!r}; expected one of pilot, cu, du, pd, run"
    assert all(k.value in str(info.value) for k in Kind)  # a kind added later is listed too


def test_the_creation_detail_reads_the_record_keys_the_records_module_spells() -> None:
    data = {RUN: "run-1", DESCRIPTION: {"executable": "/bin/true", "name": "n", "number_of_processes": 2}}
    assert json.loads(creation_detail("cu", data)) == {"run": "run-1", "name": "n", "slots": 2}
    assert json.loads(creation_detail("du", data)) == {}


def test_loads_many_decodes_like_one_loads_each_and_a_bad_text_raises_its_own_error() -> None:
    texts = ['{"a":1}', "{}", '{"l":[],"s":"\\u00fc \\"q\\"","n":null}', "[1,2]", "3"]
    assert loads_many(texts) == [json.loads(t) for t in texts]
    assert loads_many([]) == []
    with pytest.raises(json.JSONDecodeError) as bad:
        loads_many(['{"a":1}', '{"b":', '{"c":3}'])
    assert bad.value.doc == '{"b":'  # the error is the bad text's own
    with pytest.raises(json.JSONDecodeError):
        loads_many(['{"a":1} , {"b":2}'])  # two values in one text: json.loads' "extra data"
    assert loads_many([" {\"a\": 1} ", "NaN"])[0] == {"a": 1}  # what json.loads takes, it takes


@pytest.mark.parametrize("value", [
    "Running", {"host": "n1", "slots": 2, "nodes": {"a": [0, 1]}}, 1733412345.123456, -0.0, 2**70, None, True,
    [], {"ü": "\"q\"\n"}, ["x", {"y": [1.5, None]}],
])
def test_dumps_is_compact_json_that_reads_back_exactly(value: object) -> None:
    text = dumps(value, "cu 'a'", "data.x")
    assert text == json.dumps(value, separators=(",", ":"), allow_nan=False)
    assert json.loads(text) == value
    assert ", " not in text and ": " not in text


@pytest.mark.parametrize(("value", "why"), [
    (float("nan"), "Out of range float values are not JSON compliant"),
    ({"a": float("inf")}, "Out of range float values are not JSON compliant"),
    ({"a": {1, 2}}, "Object of type set is not JSON serializable"),
    (object(), "is not JSON serializable"),
])
def test_dumps_names_the_field_of_a_value_that_is_not_json(value: object, why: str) -> None:
    for _ in range(2):  # the shared encoder is left usable by a failure
        with pytest.raises(DescriptionError) as info:
            dumps(value, "cu 'a'", "data.x")
        assert str(info.value).startswith("cu 'a': data.x is not JSON-serialisable: ")
        assert why in str(info.value)
        assert info.value.field == "data.x"
    assert dumps({"ok": 1}, "cu 'a'", "data.x") == '{"ok":1}'
