"""The coordination codec: every Kind is accepted by name, an unknown one is told all of them; a CU's creation
detail reads the record keys :mod:`pilotdata.records` spells."""

from __future__ import annotations

import json

import pytest

from pilotdata.coordination._codec import creation_detail, kind_name, loads_many
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
