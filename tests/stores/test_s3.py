"""s3:// stores against a real moto_server (and one that checks request signatures)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from pilotdata.errors import StoreAuthError, StoreError, StoreUnreachableError, UnsafePathError
from pilotdata.stores import InvalidStoreURLError, open_store, store_from_record
from pilotdata.stores.s3 import S3Store
from tests import servers
from tests.stores.conformance import MakeStore, StoreConformance, read, write
from tests.stores.conftest import AuthS3


@pytest.fixture
def make_store(moto_server: servers.MotoServer, s3_bucket: str) -> MakeStore:
    def make(size: int | None = None) -> Any:
        return open_store(
            f"s3://{s3_bucket}/pd-{uuid.uuid4().hex[:8]}", size=size, labels={"site": "moto"},
            storage_options=moto_server.storage_options(),
        )

    return make


@pytest.fixture
def secret_options(moto_server: servers.MotoServer) -> dict[str, Any]:
    return {k: v for k, v in moto_server.storage_options().items() if k in ("key", "secret")}


class TestS3StoreConformance(StoreConformance):
    """The shared store behaviour over a real moto_server."""


def test_url_forms(moto_server: servers.MotoServer) -> None:
    options = moto_server.storage_options()
    store = open_store("s3://bucket//a/./b/", storage_options=options)
    assert isinstance(store, S3Store)
    assert (store.scheme, store.bucket, store.root, store.url) == ("s3", "bucket", "bucket/a/b", "s3://bucket/a/b")
    assert open_store("s3://bucket", storage_options=options).root == "bucket"
    assert store.public_options() == {"client_kwargs": {"endpoint_url": moto_server.endpoint_url}}


@pytest.mark.parametrize("url", ["s3:///prefix", "s3://AKIAXYZ:sekrit123@bucket/p", "s3://bucket/p?versionId=1"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidStoreURLError) as caught:
        open_store(url)
    assert "sekrit123" not in str(caught.value) and "AKIAXYZ" not in str(caught.value)


def test_version_suffix_in_a_name_is_refused(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(UnsafePathError):
        write(store, "data?versionId=3", b"x")
    assert store.files() == {}


def test_same_s3_endpoint(moto_server: servers.MotoServer, s3_bucket: str, tmp_path: Path) -> None:
    options = moto_server.storage_options()
    one = open_store(f"s3://{s3_bucket}/one", storage_options=options)
    two = open_store(f"s3://{s3_bucket}/two", storage_options=options)
    assert one.same_s3_endpoint(two)
    elsewhere = open_store(f"s3://{s3_bucket}/x", storage_options={**options, "client_kwargs": {
        "endpoint_url": "http://127.0.0.1:9"}})
    other_identity = open_store(f"s3://{s3_bucket}/x", storage_options={**options, "key": "someone-else"})
    assert not one.same_s3_endpoint(elsewhere)
    assert not one.same_s3_endpoint(other_identity)
    assert not one.same_s3_endpoint(open_store(tmp_path))
    assert not one.same_local_fs(two)
    # the fast path this promises works: a server-side copy between the two prefixes
    write(one, "f", b"copied by the server")
    one.fs.copy(one.path("f"), two.path("f"))
    assert read(two, "f") == b"copied by the server"


def test_credentials_and_endpoint_from_environment(
    moto_server: servers.MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    store = open_store(f"s3://{s3_bucket}/from-env")
    write(store, "f", b"env credentials")
    assert read(store, "f") == b"env credentials"
    assert store.public_options() == {"endpoint_url": moto_server.endpoint_url}
    # another process with only the public record and the same environment reads it back
    assert read(store_from_record(store.record()), "f") == b"env credentials"


def test_missing_bucket_is_named(moto_server: servers.MotoServer) -> None:
    store = open_store("s3://no-such-bucket-here/p", storage_options=moto_server.storage_options())
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here'"):
        store.ping()


def test_unreachable_endpoint(moto_server: servers.MotoServer) -> None:
    options = {
        **moto_server.storage_options(),
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{servers.free_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    store = open_store("s3://bucket/p", storage_options=options)
    with pytest.raises(StoreUnreachableError) as caught:
        store.ping()
    assert "s3://bucket/p" in str(caught.value)


def test_right_credentials_pass_the_signature_check(moto_auth_server: AuthS3) -> None:
    options = moto_auth_server.storage_options()
    store = open_store(f"s3://{moto_auth_server.bucket}/ok", storage_options=options)
    store.ping()
    write(store, "f", b"signed")
    assert read(store, "f") == b"signed"


def test_wrong_secret_is_an_auth_error_without_the_secret(moto_auth_server: AuthS3) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    options = moto_auth_server.storage_options(wrong)
    store = open_store(f"s3://{moto_auth_server.bucket}/p", storage_options=options)
    for operation in (store.ping, store.files, lambda: write(store, "f", b"x")):
        with pytest.raises(StoreAuthError) as caught:
            operation()
        message = str(caught.value)
        assert f"s3://{moto_auth_server.bucket}/p" in message
        assert wrong not in message and moto_auth_server.secret not in message
        assert moto_auth_server.key not in message
    text = json.dumps(store.record()) + repr(store)
    assert wrong not in text and moto_auth_server.key not in text


def test_unknown_access_key_is_an_auth_error(moto_auth_server: AuthS3) -> None:
    options = {**moto_auth_server.storage_options(), "key": "AKIANOTAREALKEY00000"}
    with pytest.raises(StoreAuthError, match=r"InvalidAccessKeyId|403"):
        open_store(f"s3://{moto_auth_server.bucket}/p", storage_options=options).files()
