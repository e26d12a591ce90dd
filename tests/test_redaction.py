"""Redaction: one table of URLs and texts (every case the five former ``redact_url`` copies handled),
secrets registered at runtime, and real library log records through the filter (botocore, ``pdata --debug``)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilotdata.redaction import (
    RedactingFilter,
    install_log_filter,
    is_secret_name,
    public_url,
    redact_url,
    register_secret,
    scrub,
    url_secrets,
)
from tests import servers

# url, redact_url(url), public_url(url), url_secrets(url)
URLS = [
    # Redis coordination URLs (coordination/redis_backend.py): password in userinfo or in the query
    ("redis://:pw@h:1/0", "redis://:***@h:1/0", "redis://h:1/0", ["pw"]),
    ("rediss://user:p%40ss@h:1/2", "rediss://user:***@h:1/2", "rediss://user@h:1/2", ["p%40ss", "p@ss"]),
    ("unix:///tmp/r.sock?db=1&password=pw", "unix:///tmp/r.sock?db=1&password=***", "unix:///tmp/r.sock?db=1",
     ["pw"]),
    ("unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=0", []),
    ("redis://h:1", "redis://h:1", "redis://h:1", []),
    ("redis://:pw@[::1", "redis://:***@[::1", "redis://[::1", ["pw"]),  # urlsplit: "Invalid IPv6 URL"
    # store URLs (stores/base.py): userinfo only
    ("s3://AKIA:secretkey@host/bucket", "s3://AKIA:***@host/bucket", "s3://AKIA@host/bucket", ["secretkey"]),
    ("sftp://alice:pw123@127.0.0.1/pd", "sftp://alice:***@127.0.0.1/pd", "sftp://alice@127.0.0.1/pd", ["pw123"]),
    ("sftp://u:pw@[bad/x", "sftp://u:***@[bad/x", "sftp://u@[bad/x", ["pw"]),  # unparsable: was shown as is
    ("file:///data/x", "file:///data/x", "file:///data/x", []),
    # launcher service URLs (launchers/base.py): user kept, bad ports and unparsable URLs still hidden
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0", "redis://h:6379/0", ["pw"]),
    ("ssh://u:pw@host", "ssh://u:***@host", "ssh://u@host", ["pw"]),
    ("ssh://u@host:2222", "ssh://u@host:2222", "ssh://u@host:2222", []),
    ("ssh://u:pw@host:bad", "ssh://u:***@host:bad", "ssh://u@host:bad", ["pw"]),  # .port raised before
    ("pbs://user:topsecret@host", "pbs://user:***@host", "pbs://user@host", ["topsecret"]),
    # description URLs (descriptions/_checks.py): endpoint_url in storage options
    ("http://u:pw@127.0.0.1:9000", "http://u:***@127.0.0.1:9000", "http://u@127.0.0.1:9000", ["pw"]),
    # history URLs (history/models.py): SQLAlchemy URLs, '@' in the password, empty password
    ("postgresql+psycopg://pdata:pw-xyz@127.0.0.1:5432/history",
     "postgresql+psycopg://pdata:***@127.0.0.1:5432/history", "postgresql+psycopg://pdata@127.0.0.1:5432/history",
     ["pw-xyz"]),
    ("mysql://root:p@ss@127.0.0.1/h", "mysql://root:***@127.0.0.1/h", "mysql://root@127.0.0.1/h", ["p@ss"]),
    ("ssh://user@host/path", "ssh://user@host/path", "ssh://user@host/path", []),
    ("ssh://user:@host/path", "ssh://user:@host/path", "ssh://user@host/path", []),
    ("sqlite:////abs/h.sqlite", "sqlite:////abs/h.sqlite", "sqlite:////abs/h.sqlite", []),
    # secret query parameters: tokens, presigned S3 (v4 and v2), Azure SAS, a fragment token
    ("https://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101"
     "&X-Amz-Signature=abc123&X-Amz-Security-Token=tok",
     "https://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Signature=***"
     "&X-Amz-Security-Token=***",
     "https://h/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256",
     ["AKIAIOSFODNN7EXAMPLE%2F20240101", "AKIAIOSFODNN7EXAMPLE/20240101", "abc123", "tok"]),
    ("https://h/k?AWSAccessKeyId=AKID&Expires=1&Signature=s%2Fg", "https://h/k?AWSAccessKeyId=***&Expires=1&Signature=***",
     "https://h/k?Expires=1", ["AKID", "s%2Fg", "s/g"]),
    ("https://acct.blob/c?sv=2020&sig=xyz", "https://acct.blob/c?sv=2020&sig=***", "https://acct.blob/c?sv=2020",
     ["xyz"]),
    ("https://h/cb#access_token=zz&state=1", "https://h/cb#access_token=***&state=1", "https://h/cb#state=1",
     ["zz"]),
    ("http://h/?api_token=t&key=k&db=2", "http://h/?api_token=***&key=***&db=2", "http://h/?db=2", ["t", "k"]),
    # not one URL: scrubbed as text (the ad-hoc split("@") of session.py, coordination/__init__.py, cli/output.py)
    ("this is not a url user:topsecret@", "this is not a url user:***@", "this is not a url user:***@", []),
    ("user:pw@host", "user:***@host", "user:***@host", []),
    ("ns@redis://:pw@h:1/0", "ns@redis://:***@h:1/0", "ns@redis://:***@h:1/0", []),
    ("error connecting to postgresql://u:pw@h/db: refused", "error connecting to postgresql://u:***@h/db: refused",
     "error connecting to postgresql://u:***@h/db: refused", []),
    ("localhost", "localhost", "localhost", []),
    ("", "", "", []),
]


@pytest.mark.parametrize(("url", "masked", "public", "secrets"), URLS, ids=[row[0] or "empty" for row in URLS])
def test_urls(url: str, masked: str, public: str, secrets: list[str]) -> None:
    assert redact_url(url) == masked
    assert public_url(url) == public
    assert url_secrets(url) == secrets
    assert redact_url(masked) == masked  # idempotent
    assert public_url(public) == public


# text, scrub(text) without registered secrets
TEXTS = [
    # botocore DEBUG request logs: Authorization header in a dict repr, presigned URLs, credential dicts
    ("Sending http request: <AWSPreparedRequest headers={'User-Agent': b'Botocore/1.34', 'Authorization': "
     "b'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/aws4_request, "
     "SignedHeaders=host, Signature=0f3a'}>",
     "Sending http request: <AWSPreparedRequest headers={'User-Agent': b'Botocore/1.34', 'Authorization': b'***'}>"),
    ("Authorization: AWS4-HMAC-SHA256 Credential=ABCDEFG/20240101/us-east-1/s3/aws4_request, Signature=ff",
     "Authorization: ***"),
    ("auth: AWS4-HMAC-SHA256 Credential=ABCDEFG/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, "
     "Signature=ff", "auth: AWS4-HMAC-SHA256 Credential=***, SignedHeaders=host, Signature=***"),
    ("url=https://b.s3/k?X-Amz-Credential=ABCDEFG%2F2024&X-Amz-Date=1", "url=https://b.s3/k?X-Amz-Credential=***&X-Amz-Date=1"),
    ("{'aws_access_key_id': 'ABCDEFG', 'aws_secret_access_key': 's/x+y', 'region_name': 'us-east-1'}",
     "{'aws_access_key_id': '***', 'aws_secret_access_key': '***', 'region_name': 'us-east-1'}"),
    ('{"key": "ABCDEFG", "secret": "s\\"x", "client_kwargs": {"endpoint_url": "http://h:1"}}',
     '{"key": "***", "secret": "***", "client_kwargs": {"endpoint_url": "http://h:1"}}'),
    ("connect(host='h', password='hunter2', pkey=None)", "connect(host='h', password='***', pkey=None)"),
    ("Redis(password=hunter2, db=0)", "Redis(password=***, db=0)"),
    ("detail: \"{'password': 'x1'}\"", "detail: \"{'password': '***'}\""),
    ("the key id AKIAIOSFODNN7EXAMPLE alone", "the key id *** alone"),
    ("x-amz-security-token: FwoGZXIvYXdz\nnext line", "x-amz-security-token: ***\nnext line"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\nafter",
     "***\nafter"),
    ("redis://:pw@h:1/0 and sftp://a:b@c/d", "redis://:***@h:1/0 and sftp://a:***@c/d"),
    # left alone: no secret here
    ("key_filename=/home/u/.ssh/id_ed25519 db=0 region=us-east-1",
     "key_filename=/home/u/.ssh/id_ed25519 db=0 region=us-east-1"),
    ("KeyError: 'password'", "KeyError: 'password'"),
    ("SignatureDoesNotMatch: The request signature we calculated does not match",
     "SignatureDoesNotMatch: The request signature we calculated does not match"),
    ("ssh://user@host:22 at 12:30, cu-1@pilot-2", "ssh://user@host:22 at 12:30, cu-1@pilot-2"),
    ("{'state': 'Done', 'pilot': 'p@x'}", "{'state': 'Done', 'pilot': 'p@x'}"),
]


@pytest.mark.parametrize(("text", "clean"), TEXTS, ids=[str(i) for i in range(len(TEXTS))])
def test_text_shapes(text: str, clean: str) -> None:
    assert scrub(text) == clean
    assert scrub(clean) == clean


# name, secret?, why: the one rule (redaction.is_secret_name) that stores, descriptions and the scrubber use.
# The rows marked "disputed" are where the three former rules disagreed.
SECRET_NAMES = [
    ("password", True, "a password"), ("Password", True, "any case"), ("passwd", True, "disputed: stores said no"),
    ("pwd", True, "disputed: stores and descriptions said no"), ("passphrase", True, "an SSH key's passphrase"),
    ("X-Amz-Credential", True, "presigned URL"), ("X-Amz-Signature", True, "presigned URL"),
    ("aws_secret_access_key", True, "S3 secret key"), ("aws_access_key_id", True, "S3 key id"),
    ("AWSAccessKeyId", True, "presigned v2"), ("api_token", True, "token"), ("aws_session_token", True, "token"),
    ("Signature", True, "signature"), ("sig", True, "Azure SAS"), ("key", True, "s3fs's key id"),
    ("pkey", True, "a paramiko key object"), ("access-key", True, "key"), ("sse_customer_key", True, "SSE-C key"),
    ("SSECustomerKey", True, "disputed: boto3's spelling of the SSE-C key; stores and redaction said no"),
    ("x-api-key", True, "header"), ("Authorization", True, "disputed: header; stores and descriptions said no"),
    ("ssh_key", True, "a key"), ("private_key", True, "a key"), ("credentials", True, "credentials"),
    ("SSEKMSKeyId", True, "disputed: a KMS key id, kept out on the safe side; stores said no"),
    ("session", True, "disputed: a logged-in session object; only stores said yes"),
    ("sock", True, "disputed: a connected socket object; only stores said yes"),
    ("cookie", True, "a session cookie"),
    ("key_filename", False, "disputed: a path to a key, not the key; descriptions said yes"),
    ("private_key_file", False, "disputed: a path; redaction and descriptions said yes"),
    ("irods_env_file", False, "a path"), ("known_hosts", False, "a path, public keys"),
    ("aws_region", False, "disputed: a region is no secret; descriptions said yes"),
    ("aws_profile", False, "disputed: a profile's name, not its keys; descriptions said yes"),
    ("region", False, "where"), ("region_name", False, "where"), ("profile", False, "which profile"),
    ("signature_version", False, "disputed: s3fs's 's3v4' setting; redaction said yes"),
    ("look_for_keys", False, "disputed: a paramiko flag; descriptions said yes"),
    ("monkey", False, "disputed: contains 'key'; descriptions said yes"), ("keys", False, "a word"),
    ("db", False, "-"), ("endpoint_url", False, "an address (its password is masked as a URL)"),
    ("username", False, "who, not how"), ("client_kwargs", False, "a container (its items are checked)"),
    ("anon", False, "a flag"), ("state", False, "-"), ("host", False, "-"), ("port", False, "-"),
]


@pytest.mark.parametrize(("name", "secret", "why"), SECRET_NAMES, ids=[row[0] for row in SECRET_NAMES])
def test_secret_names_one_rule_everywhere(name: str, secret: bool, why: str) -> None:
    from pilotdata.descriptions import is_secret_key
    from pilotdata.stores.base import is_secret_option, public_options

    assert is_secret_name(name) is secret, why
    assert is_secret_option(name) is secret and is_secret_key(name) is secret  # the same rule
    assert (name in public_options({name: "v"})) is not secret  # a store's record keeps exactly the public ones
    assert (scrub(f"{name}=topsecretvalue") == f"{name}=***") is secret  # and text is scrubbed by it


def test_registered_secrets_are_scrubbed_anywhere() -> None:
    secret = "rs-" + uuid.uuid4().hex
    text = f"error at /work/{secret}/x: token {secret}"
    assert scrub(text) == text
    register_secret(secret, None, "")
    assert scrub(text) == "error at /work/***/x: token ***"
    quoted = "pp%2F" + uuid.uuid4().hex  # registered raw: its percent-decoded form is hidden too
    register_secret(quoted)
    assert scrub(f"a {quoted.replace('%2F', '/')} b") == "a *** b"


def test_short_values_are_not_registered_but_given_ones_are_scrubbed() -> None:
    register_secret("abc")
    assert scrub("abcdef abc") == "abcdef abc"
    assert scrub("abcdef abc", ["abc"]) == "***def ***"


def _record(logger: str, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.DEBUG, __file__, 1, msg, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return record


def test_filter_scrubs_message_arguments_and_exception_text() -> None:
    handler_out = io.StringIO()
    handler = logging.StreamHandler(handler_out)
    handler.addFilter(RedactingFilter())
    try:
        raise ConnectionError("cannot reach redis://:hunter2@h:1/0")
    except ConnectionError as caught:
        exc = caught
    records = [
        _record("botocore.endpoint", "Sending http request: %s", {"Authorization": b"Credential=ABCDEFG/2024/x"}),
        _record("urllib3", "params %r", {"password": "hunter2"}),
        _record("pilotdata", "100%% of %s done", "redis://:hunter2@h"),
        _record("pilotdata", "failed", exc=exc),
        _record("pilotdata", "bad %d format", "not a number"),  # malformed: kept, logging reports it
    ]
    for record in records[:-1]:
        assert handler.handle(record)
    assert handler.filter(records[-1]) and records[-1].msg == "bad %d format"
    text = handler_out.getvalue()
    assert "hunter2" not in text and "ABCDEFG" not in text
    assert "'Authorization': b'***'" in text and "'password': '***'" in text and "100% of redis://:***@h done" in text
    assert "ConnectionError: cannot reach redis://:***@h:1/0" in text


def test_install_log_filter_covers_every_root_handler_once() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        install_log_filter()
        install_log_filter()
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    finally:
        root.removeHandler(handler)


# -- real library records ---------------------------------------------------------------------------------------
@pytest.fixture
def botocore_debug() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """(scrubbed, raw) text of botocore's DEBUG records, through a filtered and an unfiltered handler."""
    scrubbed, raw = io.StringIO(), io.StringIO()
    filtered, unfiltered = logging.StreamHandler(scrubbed), logging.StreamHandler(raw)
    filtered.addFilter(RedactingFilter())
    logger = logging.getLogger("botocore")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(unfiltered)  # first: it must see the records before the filter rewrites them
    logger.addHandler(filtered)
    yield scrubbed, raw
    logger.removeHandler(filtered)
    logger.removeHandler(unfiltered)
    logger.setLevel(old_level)


def test_botocore_request_logs_lose_the_access_key(moto_server: servers.MotoServer,
                                                   botocore_debug: tuple[io.StringIO, io.StringIO]) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    key_id = "AKIA" + uuid.uuid4().hex[:16].upper()
    secret = "sk-" + uuid.uuid4().hex
    client = boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id=key_id,
                          aws_secret_access_key=secret, region_name="us-east-1",
                          config=Config(signature_version="s3v4"))
    bucket = "redact-" + uuid.uuid4().hex[:8]
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="f", Body=b"x")
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "f"})
    client.list_objects_v2(Bucket=bucket)
    logging.getLogger("botocore.test").debug("presigned %s", url)
    scrubbed, raw = botocore_debug[0].getvalue(), botocore_debug[1].getvalue()
    assert key_id in raw  # what the filter had to hide: botocore does print it
    assert "Credential=" in raw and "X-Amz-Credential=" in raw
    assert key_id not in scrubbed and secret not in scrubbed
    assert "Credential=***" in scrubbed or "'Authorization': b'***'" in scrubbed
    assert "X-Amz-Credential=***" in scrubbed
    assert len(scrubbed.splitlines()) == len(raw.splitlines())  # nothing dropped


@pytest.mark.parametrize("key_id", ["AKIA" + "Q" * 16, "plain-key-id-" + "7" * 8], ids=["aws-shaped", "registered"])
def test_pdata_debug_prints_no_store_secret(moto_server: servers.MotoServer, tmp_path: Path, key_id: str) -> None:
    key_id = key_id[:-6] + uuid.uuid4().hex[:6].upper()
    secret = "Sup3r-" + uuid.uuid4().hex
    bucket = "dbg-" + uuid.uuid4().hex[:8]
    boto3 = pytest.importorskip("boto3")
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="x", aws_secret_access_key="y",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    env = {**os.environ, "PDATA_HOME": str(tmp_path / "home")}
    env.pop("PDATA_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pilotdata.cli", "--debug", "store", "add", "s3pd", f"s3://{bucket}/pd",
         "--option", f"key={key_id}", "--option", f"secret={secret}",
         "--option", f'client_kwargs={{"endpoint_url": "{moto_server.endpoint_url}"}}'],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pdata: DEBUG: botocore" in proc.stderr  # the library's request logs were printed
    for output in (proc.stdout, proc.stderr):
        assert key_id not in output and secret not in output
