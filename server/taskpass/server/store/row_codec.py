"""Records <-> rows for both backends: each table's columns, in the order its statements use, once.

The backends differ only in how a column holds a time and a list of names (a `Dialect`: see
sqlite_codec and postgres_codec). Everything else is the same on both: a JSON object is
canonical JSON text (audit_chain.canonical_json), an enum is its value, any other field is
stored as it is.

Each table's writer (record -> row tuple) and reader (row -> record) are generated from its
column list and the dialect, as dataclasses generates __init__: they are the tuple display and
the constructor call one would write by hand, with no loop over columns and no call for a value
stored as it is, so a row costs what a hand-written function costs (record_issuance converts a
task and a credential per exchange). Readers are guarded by row_guard.reads, with the columns
whose value can be unreadable taken from the same list.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import linecache
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from taskpass.server.store.audit_chain import canonical_json
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
from taskpass.server.store.row_guard import Column, positive, reads

Row = Sequence[Any]
R = TypeVar("R")


class Kind(enum.Enum):
    """How a column holds its record field, where it is not stored as it is."""

    TIME = "time"
    OPTIONAL_TIME = "time or NULL"
    NAMES = "names"
    """A tuple of strings (scopes, rules, groups)."""
    JSON = "json"
    """A JSON object, as canonical JSON text."""
    POSITIVE = "positive"
    """An integer of at least 1 (a seq, a ttl): a reader refuses any other."""


Form = Kind | type[enum.Enum]
"""A column's form: a Kind, or an enum class (stored as its value; the record converts it
back, and a reader refuses a value the enum does not have)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What a backend does differently."""

    name: str
    """Names the generated functions' source in tracebacks."""
    time_to_db: Callable[[dt.datetime], Any] | None
    """A time as its column holds it; None: the driver takes the datetime itself."""
    time_from_db: Callable[[Any], dt.datetime] | None
    """A time column's value as a datetime; None: the driver gives a datetime (the record
    normalises it to UTC)."""
    time_check: Callable[[Any], object]
    """Raises one of row_guard.UNREADABLE for a time column's value no record can hold."""
    names_to_db: Callable[[Sequence[str]], Any]
    names_from_db: Callable[[Any], tuple[str, ...]]


class Table(Generic[R]):
    """A table's columns, in the order of the backends' statements, each named as its record's
    field; a column given as (name, form) is not stored as it is."""

    def __init__(self, name: str, record: type[R], *columns: str | tuple[str, Form]) -> None:
        self.name = name
        self.record = record
        self.columns: tuple[tuple[str, Form | None], ...] = tuple(
            (column, None) if isinstance(column, str) else column for column in columns
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def writer(self, dialect: Dialect) -> Callable[[R], tuple[Any, ...]]:
        """record -> the row tuple the table's INSERT takes."""
        calls = {**_WRITE_CALLS, **_time_calls(dialect.time_to_db, "_time_to_db")}
        values = ", ".join(
            f"r.{name}.value" if _is_enum(form) else _converted(f"r.{name}", form, calls)
            for name, form in self.columns
        )
        function = f"{self.name}_to_row"
        source = f"def {function}(r):\n    return ({values},)\n"
        to_row: Callable[[R], tuple[Any, ...]] = _define(function, source, dialect, self.record)
        return to_row

    def reader(self, dialect: Dialect) -> Callable[[Row], R]:
        """A row of the table's columns (a SELECT's or RETURNING's) -> the record, guarded."""
        calls = {**_READ_CALLS, **_time_calls(dialect.time_from_db, "_time_from_db")}
        # An enum's value is passed as it is: the record converts it.
        fields = ", ".join(
            f"{name}={_converted(f'row[{index}]', form, calls)}"
            for index, (name, form) in enumerate(self.columns)
        )
        function = f"{self.name}_from_row"
        source = f"def {function}(row):\n    return _record({fields})\n"
        read = _define(function, source, dialect, self.record)
        checks = [
            Column(index, name, _check(form, dialect))
            for index, (name, form) in enumerate(self.columns)
            if form is not None
        ]
        return reads(self.name, *checks)(read)


# The function a value of each kind goes through, by the name generated code calls it (see
# _define); a kind not listed, or a time the driver converts, is taken as it is.
_WRITE_CALLS = {Kind.NAMES: "_names_to_db", Kind.JSON: "_canonical_json"}
_READ_CALLS = {Kind.NAMES: "_names_from_db", Kind.JSON: "_json_loads", Kind.POSITIVE: "_positive"}


def _time_calls(convert: Callable[..., Any] | None, call: str) -> dict[Kind, str]:
    return {} if convert is None else {Kind.TIME: call, Kind.OPTIONAL_TIME: call}


def _is_enum(form: Form | None) -> bool:
    return form is not None and not isinstance(form, Kind)


def _converted(value: str, form: Form | None, calls: dict[Kind, str]) -> str:
    """The expression for `value` (a field, or a column) converted as its form needs."""
    call = calls.get(form) if isinstance(form, Kind) else None
    if call is None:
        return value
    if form is Kind.OPTIONAL_TIME:
        return f"None if {value} is None else {call}({value})"
    return f"{call}({value})"


def _check(form: Form, dialect: Dialect) -> Callable[[Any], object]:
    """What row_guard runs on the column's value of a row that could not be read."""
    if form is Kind.TIME:
        return dialect.time_check
    if form is Kind.OPTIONAL_TIME:
        check = dialect.time_check
        return lambda value: None if value is None else check(value)
    if form is Kind.NAMES:
        return dialect.names_from_db
    if form is Kind.JSON:
        return json.loads
    if form is Kind.POSITIVE:
        return positive
    assert isinstance(form, type)
    return form  # an enum: its constructor refuses a value it does not have


def _define(function: str, source: str, dialect: Dialect, record: type[Any]) -> Any:
    filename = f"<row_codec {dialect.name} {function}>"
    # Registered so that a traceback through a generated function shows its line.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "__name__": __name__,
        "_record": record,
        "_time_to_db": dialect.time_to_db,
        "_time_from_db": dialect.time_from_db,
        "_names_to_db": dialect.names_to_db,
        "_names_from_db": dialect.names_from_db,
        "_canonical_json": canonical_json,
        "_json_loads": json.loads,
        "_positive": positive,
    }
    # The source is made only from the column lists below and the dialect's kinds, never input.
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return namespace[function]


TIME = Kind.TIME
OPTIONAL_TIME = Kind.OPTIONAL_TIME
NAMES = Kind.NAMES
JSON = Kind.JSON
POSITIVE = Kind.POSITIVE

TASKS = Table(
    "tasks",
    TaskRecord,
    "requester",
    "task_id",
    "digest",
    ("descriptor", JSON),
    ("created_at", TIME),
    ("completed_at", OPTIONAL_TIME),
)
CREDENTIALS = Table(
    "credentials",
    CredentialRecord,
    "jti",
    "requester",
    "task_id",
    "audience",
    ("scopes", NAMES),
    ("issued_at", TIME),
    ("expires_at", TIME),
    "policy_version",
    "kid",
    "cert_thumbprint",
    "approval_id",
    "parent_jti",
    ("revoked_at", OPTIONAL_TIME),
    "revoke_reason",
)
AUDIT = Table(
    "audit",
    AuditRecord,
    ("seq", POSITIVE),
    "kind",
    "actor",
    ("at", TIME),
    ("payload", JSON),
    "prev_hash",
    "hash",
)
EVENTS = Table(
    "revocation_events",
    RevocationEvent,
    ("seq", POSITIVE),
    ("kind", RevocationKind),
    "subject",
    "task_id",
    "jti",
    ("expires_at", TIME),
    ("at", TIME),
    "set_token",
    "reason",
)
APPROVALS = Table(
    "approvals",
    ApprovalRecord,
    "approval_id",
    "requester",
    "requester_method",
    "cert_thumbprint",
    "task_id",
    "digest",
    ("descriptor", JSON),
    "audience",
    "action",
    "sensitivity",
    ("scopes", NAMES),
    ("ttl_seconds", POSITIVE),
    ("rules", NAMES),
    ("approver_groups", NAMES),
    "policy_version",
    "decision_id",
    ("state", ApprovalState),
    ("created_at", TIME),
    ("expires_at", TIME),
    "decided_by",
    ("decided_at", OPTIONAL_TIME),
    "reason",
    ("consumed_at", OPTIONAL_TIME),
    "parent_jti",
)
BANS = Table("bans", BanRecord, "pattern", ("banned_at", TIME), "banned_by", "reason")
PUBLISHED_KEYS = Table(
    "published_keys",
    PublishedKey,
    "kid",
    ("jwk", JSON),
    "published_by",
    ("published_at", TIME),
    ("publish_until", TIME),
)


class RowCodec:
    """One backend's writers and readers of every table."""

    def __init__(self, dialect: Dialect) -> None:
        self.task_to_row = TASKS.writer(dialect)
        self.task_from_row = TASKS.reader(dialect)
        self.credential_to_row = CREDENTIALS.writer(dialect)
        self.credential_from_row = CREDENTIALS.reader(dialect)
        self.audit_to_row = AUDIT.writer(dialect)
        self.audit_from_row = AUDIT.reader(dialect)
        self.event_to_row = EVENTS.writer(dialect)
        self.event_from_row = EVENTS.reader(dialect)
        self.approval_to_row = APPROVALS.writer(dialect)
        self.approval_from_row = APPROVALS.reader(dialect)
        self.ban_to_row = BANS.writer(dialect)
        self.ban_from_row = BANS.reader(dialect)
        self.key_to_row = PUBLISHED_KEYS.writer(dialect)
        self.key_from_row = PUBLISHED_KEYS.reader(dialect)
