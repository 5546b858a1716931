"""Records: timestamps must be aware and are kept in UTC; revocation kinds are closed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from taskpass.server.store.records import NewRevocation, RevocationKind

from .builders import T0, credential, entry, task, task_revocation

NAIVE = dt.datetime(2026, 6, 1, 12, 0)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: task(created_at=NAIVE), id="task"),
        pytest.param(lambda: credential("j", issued_at=NAIVE), id="credential"),
        pytest.param(lambda: entry(at=NAIVE), id="audit-entry"),
        pytest.param(lambda: task_revocation(at=NAIVE), id="revocation"),
    ],
)
def test_naive_datetime_is_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build()


def test_aware_datetime_in_another_zone_is_kept_as_the_same_instant_in_utc() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))

    record = credential("j", issued_at=T0.astimezone(tokyo))

    assert record.issued_at == T0
    assert record.issued_at.tzinfo is dt.UTC
    assert record.expires_at.tzinfo is dt.UTC


def test_revocation_kind_given_as_text_becomes_the_enum_and_unknown_kinds_are_refused() -> None:
    fields = {
        "subject": "s",
        "task_id": None,
        "jti": None,
        "expires_at": T0,
        "at": T0,
        "set_token": "t",
        "reason": "r",
    }

    assert NewRevocation(kind="task", **fields).kind is RevocationKind.TASK  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session"):
        NewRevocation(kind="session", **fields)  # type: ignore[arg-type]
