"""The cross-replica benchmark's PostgreSQL check: a clear reason, never a password."""

from __future__ import annotations

import socket

import pytest

from bench import replicas


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once the socket is closed


@pytest.mark.parametrize(
    ("dsn", "printed"),
    [
        pytest.param(
            "postgresql://postgres:s3cret@db:5432/test",
            "postgresql://postgres:***@db:5432/test",
            id="password-hidden",
        ),
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/test",
            "postgresql://postgres@127.0.0.1:5432/test",
            id="no-password-unchanged",
        ),
    ],
)
def test_redacted_hides_only_the_password(dsn: str, printed: str) -> None:
    assert replicas.redacted(dsn) == printed


def test_unreachable_names_the_server_and_the_reason_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _closed_port()
    monkeypatch.setenv("TASKPASS_TEST_PG_DSN", f"postgresql://u:s3cret@127.0.0.1:{port}/test")

    reason = replicas.unreachable()

    assert reason is not None
    assert reason.startswith(f"PostgreSQL not reachable at postgresql://u:***@127.0.0.1:{port}/")
    assert "s3cret" not in reason
