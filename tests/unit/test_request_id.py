"""Request ids: a caller's well-formed id is kept, anything else replaced; an audit entry made
during a call carries the call's id."""

from __future__ import annotations

import contextvars
import datetime as dt

import pytest

from taskpass.server.request_id import (
    accept_request_id,
    bind_request_id,
    current_request_id,
    new_request_id,
)
from taskpass.server.store.records import AuditEntry

AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param("4bf92f3577b34da6a3ce929d0e0e4736", id="hex"),
        pytest.param("123e4567-e89b-12d3-a456-426614174000", id="uuid"),
        pytest.param(b"req-1.2:3", id="bytes"),
        pytest.param("a" * 128, id="longest"),
    ],
)
def test_a_well_formed_request_id_is_kept(offered: str | bytes) -> None:
    expected = offered.decode() if isinstance(offered, bytes) else offered
    assert accept_request_id(offered) == expected


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("two words", id="space"),
        pytest.param('x"}{"level":"error', id="json-injection"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param(b"\xff\xfe", id="not-ascii"),
    ],
)
def test_anything_else_gets_a_fresh_id(offered: str | bytes | None) -> None:
    got = accept_request_id(offered)
    assert got != offered
    assert len(got) == 24
    assert int(got, 16) >= 0


def test_fresh_ids_differ() -> None:
    assert len({new_request_id() for _ in range(100)}) == 100


def test_an_audit_entry_made_during_a_call_carries_its_request_id() -> None:
    def during_call() -> AuditEntry:
        bind_request_id("req-42")
        return AuditEntry(kind="decision", actor="a", at=AT, payload={"outcome": "allow"})

    entry = contextvars.copy_context().run(during_call)

    assert entry.payload == {"outcome": "allow", "request_id": "req-42"}


def test_an_audit_entry_outside_a_call_is_left_as_given() -> None:
    entry = AuditEntry(kind="decision", actor="a", at=AT, payload={"outcome": "allow"})
    assert current_request_id() is None
    assert entry.payload == {"outcome": "allow"}


def test_a_request_id_already_in_the_payload_is_not_replaced() -> None:
    def during_call() -> AuditEntry:
        bind_request_id("req-42")
        return AuditEntry(kind="k", actor="a", at=AT, payload={"request_id": "original"})

    assert contextvars.copy_context().run(during_call).payload == {"request_id": "original"}
