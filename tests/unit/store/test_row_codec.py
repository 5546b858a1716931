"""row_codec: each table's columns are listed once; the backends' statements must list them in
that order, and each backend's generated readers and writers must carry every record across."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import traceback
from types import ModuleType
from typing import Any

import pytest

from taskpass.server.store import (
    copy,
    postgres,
    postgres_approvals,
    postgres_bans,
    postgres_cascade,
    postgres_keys,
    postgres_writer,
    row_codec,
    sqlite,
    sqlite_approvals,
    sqlite_bans,
    sqlite_cascade,
    sqlite_keys,
    sqlite_writer,
)
from taskpass.server.store.postgres_codec import codec as postgres_codec
from taskpass.server.store.records import (
    ApprovalRecord,
    ApprovalState,
    AuditRecord,
    BanRecord,
    CredentialRecord,
    PublishedKey,
    RevocationEvent,
    RevocationKind,
    TaskRecord,
)
from taskpass.server.store.row_codec import RowCodec
from taskpass.server.store.sqlite_codec import codec as sqlite_codec

SQLITE_MODULES = (sqlite, sqlite_writer, sqlite_approvals, sqlite_bans, sqlite_keys, sqlite_cascade)
POSTGRES_MODULES = (
    postgres,
    postgres_writer,
    postgres_approvals,
    postgres_bans,
    postgres_keys,
    postgres_cascade,
    copy,
)
TABLES = (
    row_codec.TASKS,
    row_codec.CREDENTIALS,
    row_codec.AUDIT,
    row_codec.EVENTS,
    row_codec.APPROVALS,
    row_codec.BANS,
    row_codec.PUBLISHED_KEYS,
)

_INSERT = re.compile(r"INSERT INTO (\w+) \(([^)]*)\)")
# A SELECT's or RETURNING's column list: up to FROM, or to the end of the statement.
_LISTED = re.compile(r"\b(?:SELECT|RETURNING)\s+(.*?)(?:\bFROM\b|$)", re.DOTALL)


def _statements(modules: tuple[ModuleType, ...]) -> list[str]:
    return [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, str) and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", value)
    ]


def _columns(listed: str) -> list[str]:
    # `e.seq` is column seq of a table aliased as e
    return [column.strip().split(".")[-1] for column in listed.split(",")]


def _contains_in_order(columns: list[str], names: tuple[str, ...]) -> bool:
    return any(
        tuple(columns[i : i + len(names)]) == names for i in range(len(columns) - len(names) + 1)
    )


@pytest.mark.parametrize("modules", [SQLITE_MODULES, POSTGRES_MODULES], ids=["sqlite", "postgres"])
def test_every_table_is_inserted_with_its_columns_in_the_codec_order(
    modules: tuple[ModuleType, ...],
) -> None:
    # Every INSERT into a codec table, each on its own (a table may have several).
    inserts = [
        (table, tuple(_columns(columns)))
        for sql in _statements(modules)
        for table, columns in _INSERT.findall(sql)
    ]
    codec_names = {table.name: table.names for table in TABLES}

    assert {table for table, _ in inserts} >= set(codec_names)
    assert [
        (table, columns) for table, columns in inserts if columns != codec_names.get(table, columns)
    ] == []


@pytest.mark.parametrize("modules", [SQLITE_MODULES, POSTGRES_MODULES], ids=["sqlite", "postgres"])
def test_a_statement_reading_a_whole_row_lists_its_columns_in_the_codec_order(
    modules: tuple[ModuleType, ...],
) -> None:
    whole_rows = 0
    for sql in _statements(modules):
        for listed in _LISTED.findall(sql):
            columns = _columns(listed)
            for table in TABLES:
                if set(table.names) <= set(columns) and f" {table.name} " in f"{sql} ":
                    assert _contains_in_order(columns, table.names), (table.name, sql)
                    whole_rows += 1

    assert whole_rows >= len(TABLES)


T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
RECORDS: dict[str, list[Any]] = {
    "task": [
        TaskRecord(
            requester="spiffe://example.org/agents/a",
            task_id="task-1",
            digest="d" * 64,
            descriptor={"action": "read", "n": 3, "tags": ["a", "b"]},
            created_at=T0,
        ),
    ],
    "credential": [
        CredentialRecord(
            jti="jti-1",
            requester="spiffe://example.org/agents/a",
            task_id="task-1",
            audience="payments",
            scopes=("payments:read", "payments:list"),
            issued_at=T0,
            expires_at=T1,
            policy_version="v1",
            kid="kid-1",
        ),
    ],
    "audit": [
        AuditRecord(
            seq=5, kind="issue", actor="a", at=T0, payload={"x": [1]}, prev_hash="p", hash="h"
        ),
    ],
    "event": [
        RevocationEvent(
            seq=3,
            kind=RevocationKind.CREDENTIAL,
            subject="s",
            task_id=None,
            jti="jti-1",
            expires_at=T1,
            at=T0,
            set_token="x.y.z",
            reason="r",
        ),
    ],
    "approval": [
        ApprovalRecord(
            approval_id="apr-1",
            requester="r",
            requester_method="x509",
            cert_thumbprint=None,
            task_id="t",
            digest="d",
            descriptor={"a": 1},
            audience="aud",
            action="act",
            sensitivity="high",
            scopes=("s1", "s2"),
            ttl_seconds=300,
            rules=("rule",),
            approver_groups=(),
            policy_version="v1",
            decision_id="dec",
            state=ApprovalState.PENDING,
            created_at=T0,
            expires_at=T1,
        ),
    ],
    "ban": [BanRecord(pattern="spiffe://example.org/x/*", banned_at=T0, banned_by="a", reason="")],
    "key": [
        PublishedKey(
            kid="k", jwk={"kty": "OKP"}, published_by="host", published_at=T0, publish_until=T1
        ),
    ],
}
# The optional fields filled in too.
RECORDS["task"].append(dataclasses.replace(RECORDS["task"][0], completed_at=T1))
RECORDS["credential"].append(
    dataclasses.replace(
        RECORDS["credential"][0],
        cert_thumbprint="thumb",
        approval_id="apr-1",
        parent_jti="jti-0",
        revoked_at=T1,
        revoke_reason="gone",
    )
)
RECORDS["approval"].append(
    dataclasses.replace(
        RECORDS["approval"][0],
        state=ApprovalState.CONSUMED,
        decided_by="approver",
        decided_at=T0,
        reason="ok",
        consumed_at=T1,
        parent_jti="jti-0",
    )
)


@pytest.mark.parametrize("codec", [sqlite_codec, postgres_codec], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_a_record_written_to_a_row_reads_back_equal(codec: RowCodec, kind: str) -> None:
    to_row = getattr(codec, f"{kind}_to_row")
    from_row = getattr(codec, f"{kind}_from_row")
    for record in RECORDS[kind]:
        assert from_row(to_row(record)) == record


def test_sqlite_rows_hold_times_as_microseconds_and_names_as_compact_json() -> None:
    row = sqlite_codec.credential_to_row(RECORDS["credential"][1])

    assert row[4] == '["payments:read","payments:list"]'
    assert row[5] == 1735787045678901
    assert row[12] == 1735787345678901


def test_postgres_rows_hold_times_as_datetimes_and_names_as_lists() -> None:
    row = postgres_codec.credential_to_row(RECORDS["credential"][1])

    assert row[4] == ["payments:read", "payments:list"]
    assert row[5] is T0
    assert row[12] is T1


def test_a_generated_function_shows_its_line_in_a_traceback() -> None:
    not_a_credential = object()

    with pytest.raises(AttributeError) as caught:
        sqlite_codec.credential_to_row(not_a_credential)  # type: ignore[arg-type]

    shown = "".join(traceback.format_tb(caught.value.__traceback__))
    assert "<row_codec sqlite credentials_to_row>" in shown
    assert "return (r.jti, r.requester," in shown
