"""Secrets: never in the stored form, never echoed in an error; DU references keep only the id."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pilotdata import descriptions as d
from pilotdata.descriptions import Description
from pilotdata.errors import DescriptionError
from tests.descriptions.helpers import CU, DU, PC, PD, error_of, make

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


def test_storage_options_secrets_never_reach_to_dict() -> None:
    options = {
        "key": SECRET,
        "secret": SECRET,
        "token": SECRET,
        "password": SECRET,
        "passphrase": SECRET,
        "pkey": object(),  # secret names may hold non-JSON objects (a paramiko key)
        "AWS_SESSION_TOKEN": SECRET,
        "session": object(),  # a logged-in session: a live object holding credentials
        "client_kwargs": {"endpoint_url": f"http://u:{SECRET}@127.0.0.1:9000",
                          "aws_secret_access_key": SECRET, "region_name": "eu-west-1"},
        "aws_profile_name": "research",  # where and which profile, not who: public
        "key_filename": "/home/alice/.ssh/id_ed25519",  # a path, not the key
        "username": "alice",
        "anon": False,
        "retries": [1, 2],
    }  # fmt: skip
    pdd = PD.from_dict({"service_url": "s3://bucket/pd", "storage_options": options})
    assert pdd.storage_options["key"] == SECRET  # kept in memory for the store
    data = pdd.to_dict()
    assert SECRET not in json.dumps(data)
    assert data["storage_options"] == {
        "client_kwargs": {"endpoint_url": "http://u:***@127.0.0.1:9000", "region_name": "eu-west-1"},
        "aws_profile_name": "research",
        "key_filename": "/home/alice/.ssh/id_ed25519",
        "username": "alice",
        "anon": False,
        "retries": [1, 2],
    }
    assert SECRET not in repr(pdd) and SECRET not in str(pdd)
    public = PD.from_dict(data)
    assert public.to_dict() == data
    assert public != pdd  # the documented exception to the round trip


def test_storage_options_only_secrets_are_left_out_entirely() -> None:
    pdd = PD.from_dict({"service_url": "s3://bucket", "storage_options": {"key": SECRET, "secret": SECRET}})
    assert "storage_options" not in pdd.to_dict()


def test_storage_options_public_values_must_be_json() -> None:
    with pytest.raises(DescriptionError, match=r"storage_options\.callback: expected a JSON value") as info:
        PD.from_dict({"service_url": "s3://b", "storage_options": {"callback": print, "key": SECRET}})
    assert SECRET not in str(info.value) and info.value.field == "storage_options.callback"
    with pytest.raises(DescriptionError, match="option names must be strings"):
        PD.from_dict({"service_url": "s3://b", "storage_options": {1: "x"}})


@pytest.mark.parametrize(
    ("cls", "key", "url"),
    [
        (PC, "service_url", f"ssh://bob:{SECRET}@host:22"),
        (PD, "service_url", f"s3://AKIA:{SECRET}@bucket/prefix"),
        (PD, "service_url", f"sftp://bob:{SECRET}@host/data"),
        (DU, "file_urls", [f"sftp://bob:{SECRET}@host/a.txt"]),
    ],
)
def test_passwords_in_urls_are_rejected_without_echo(cls: type[Description], key: str, url: Any) -> None:
    err = error_of(cls, **{key: url})
    assert "passwords in URLs are not accepted" in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err.value)
    assert ":***@" in str(err)


def test_secret_key_rule_is_the_redaction_rule() -> None:
    """One rule (tests/test_redaction.py holds its table): the description's is redaction's."""
    from tests.test_redaction import SECRET_NAMES

    assert all(d.is_secret_key(k) for k in ["key", "secret", "Password", "api_token", "pkey", "session"])
    assert not any(d.is_secret_key(k) for k in ["endpoint_url", "anon", "username", "client_kwargs", "aws_region",
                                                "key_filename", "look_for_keys"])
    assert [n for n, secret, _ in SECRET_NAMES if d.is_secret_key(n) != secret] == []


def test_du_reference_urls_keep_only_the_id() -> None:
    cud = make(CU, input_data=["redis://:pw@127.0.0.1:6379/bigdata:du-7"])
    assert cud.to_dict()["input_data"] == ["du-7"]  # the URL (and its password) is not stored
