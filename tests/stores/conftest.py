"""Fixtures for the store tests: a clean credential environment, S3 buckets, an auth-checking moto."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests import servers

#: Variables that would change which credentials or endpoint a store picks up.
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "PDATA_SSH_PASSWORD", "PDATA_SSH_PASSPHRASE", "PDATA_IRODS_PASSWORD",
    "IRODS_ENVIRONMENT_FILE",
)


@pytest.fixture(autouse=True)
def _clean_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No store test sees the developer's credentials, AWS config files or instance metadata."""
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_bucket(moto_server: servers.MotoServer) -> str:
    """A fresh bucket on the shared moto_server."""
    name = "pd-" + uuid.uuid4().hex[:12]
    client = boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@dataclass
class AuthS3:
    """A moto_server that checks signatures, with one IAM user allowed everything and one bucket."""

    server: servers.MotoServer
    key: str
    secret: str
    bucket: str

    def storage_options(self, secret: str | None = None) -> dict[str, object]:
        """s3fs options for this endpoint; ``secret`` overrides the right one."""
        return {
            "key": self.key,
            "secret": self.secret if secret is None else secret,
            "endpoint_url": self.server.endpoint_url,
        }


@pytest.fixture(scope="session")
def moto_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """A real moto_server with request signing checked (the shared one accepts any credentials).

    moto checks signatures after ``INITIAL_NO_AUTH_ACTION_COUNT`` requests: the first three create
    the IAM user, its policy and its access key; every later request must be signed by that key.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        server = servers.start_moto(tmp_path_factory.mktemp("moto-auth"))
    try:
        iam = boto3.client(
            "iam", endpoint_url=server.endpoint_url, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )
        iam.create_user(UserName="pilot")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pilot", PolicyName="all", PolicyDocument=json.dumps(policy))
        access = iam.create_access_key(UserName="pilot")["AccessKey"]
        key, secret = access["AccessKeyId"], access["SecretAccessKey"]
        boto3.client(
            "s3", endpoint_url=server.endpoint_url, aws_access_key_id=key, aws_secret_access_key=secret,
            region_name="us-east-1",
        ).create_bucket(Bucket="pd-auth")
        yield AuthS3(server, key, secret, "pd-auth")
    finally:
        server.stop()
