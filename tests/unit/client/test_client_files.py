"""TaskpassClient.from_files checks the identity files before grpc sees them: a key that is not
the certificate's, or a file that is not PEM, is InvalidRequest naming the file (grpc would log
C-core errors and fail every call as a refused handshake)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from taskpass.client import TaskpassClient
from taskpass.client.errors import InvalidRequest
from tests.support.pki import TestPki

BOT = "spiffe://example.org/agents/billing-bot"


@pytest.fixture
def pki() -> TestPki:
    return TestPki(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def ca(tmp_path: Path, pki: TestPki) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(pki.ca("server CA").pem)
    return path


async def test_a_matching_pair_makes_a_client(tmp_path: Path, pki: TestPki, ca: Path) -> None:
    cert, key = TestPki.write_identity(tmp_path, "bot", pki.leaf(BOT), [pki.ca("extra")])
    async with TaskpassClient.from_files("127.0.0.1:9", ca=ca, cert=cert, key=key):
        pass


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, pki: TestPki, ca: Path) -> None:
    cert, _ = TestPki.write_identity(tmp_path, "bot", pki.leaf(BOT))
    _, other_key = TestPki.write_identity(tmp_path, "other", pki.leaf(BOT))

    with pytest.raises(InvalidRequest) as refused:
        TaskpassClient.from_files("127.0.0.1:9", ca=ca, cert=cert, key=other_key)

    assert refused.value.message == (
        f"the key in {other_key} does not belong to the certificate in {cert}: "
        "pass the key that was issued with it"
    )


def test_a_certificate_file_that_is_not_pem_is_refused(
    tmp_path: Path, pki: TestPki, ca: Path
) -> None:
    cert, key = TestPki.write_identity(tmp_path, "bot", pki.leaf(BOT))
    cert.write_bytes(b"not a certificate")
    with pytest.raises(InvalidRequest) as refused:
        TaskpassClient.from_files("127.0.0.1:9", ca=ca, cert=cert, key=key)
    assert refused.value.message == f"{cert} holds no PEM certificate"


def test_a_key_file_that_is_a_certificate_is_refused(
    tmp_path: Path, pki: TestPki, ca: Path
) -> None:
    cert, _ = TestPki.write_identity(tmp_path, "bot", pki.leaf(BOT))
    with pytest.raises(InvalidRequest) as refused:
        TaskpassClient.from_files("127.0.0.1:9", ca=ca, cert=cert, key=cert)  # swapped by mistake
    assert refused.value.message == f"{cert} holds no unencrypted PEM private key"


def test_a_missing_file_is_named(tmp_path: Path, pki: TestPki, ca: Path) -> None:
    cert, _ = TestPki.write_identity(tmp_path, "bot", pki.leaf(BOT))
    missing = tmp_path / "nope.key"
    with pytest.raises(InvalidRequest) as refused:
        TaskpassClient.from_files("127.0.0.1:9", ca=ca, cert=cert, key=missing)
    assert refused.value.message == f"cannot read {missing}: No such file or directory"
