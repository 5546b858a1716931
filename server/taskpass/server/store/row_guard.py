"""Rows read back from the database, guarded: a value taskpass never wrote is a clear store error.

taskpass writes only values it can read back. A row holding one it cannot (a timestamp beyond
the years 1-9999 of Python's datetime, a seq below 1, text where a number belongs, JSON that does
not parse) was edited outside taskpass, or damaged. Reading it must not raise OverflowError or
ValueError from deep inside a codec, answered as an INTERNAL error nobody can act on: it is
StoreCorrupted (gRPC DATA_LOSS), naming the table and the column. Not Unavailable, which tells
clients to retry: every retry reads the same row until an operator restores or corrects it. The
message never quotes the value (a row may hold anything).

Each row reader is wrapped by `reads(table, *columns)`, listing the columns whose values can be
wrong. A good row costs one try block; only a row that failed is examined, column by column, to
name the first value that is wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from taskpass.server.errors import StoreCorrupted

R = TypeVar("R")
Row = Sequence[Any]

UNREADABLE = (ValueError, TypeError, OverflowError)
"""What reading a bad value raises: out of range (OverflowError, ValueError), malformed JSON or
an unknown enum value (ValueError), the wrong type (TypeError)."""

_RESTORE = (
    "the database may have been edited outside taskpass or damaged: "
    "restore the row from a backup, or correct it"
)


@dataclass(frozen=True, slots=True)
class Column:
    index: int
    """The value's position in the row the reader is given."""
    name: str
    check: Callable[[Any], object]
    """Raises one of UNREADABLE when the value cannot be one this column holds."""


def reads(table: str, *columns: Column) -> Callable[[Callable[[Row], R]], Callable[[Row], R]]:
    """Wrap a row reader of `table`: a value it cannot read is `unreadable(table, ...)`."""

    def wrap(read: Callable[[Row], R]) -> Callable[[Row], R]:
        @functools.wraps(read)
        def guarded(row: Row) -> R:
            try:
                return read(row)
            except UNREADABLE as exc:
                raise unreadable(table, columns, row) from exc

        return guarded

    return wrap


def unreadable(table: str, columns: Sequence[Column], row: Row) -> StoreCorrupted:
    """The error for a row of `table` that could not be read: names the first bad column."""
    for column in columns:
        try:
            column.check(row[column.index])
        except UNREADABLE:
            return StoreCorrupted(
                f"store corrupted: column {column.name} of table {table} holds a value "
                f"taskpass cannot have written (out of range or malformed); {_RESTORE}"
            )
    return StoreCorrupted(
        f"store corrupted: a row of table {table} holds a value taskpass cannot have written "
        f"(out of range or malformed); {_RESTORE}"
    )


def timestamp_out_of_range(sql: str | None) -> StoreCorrupted:
    """PostgreSQL holds timestamps beyond the years 1-9999 that Python's datetime (so the
    driver, while it decodes a row, before any reader sees it) can represent: the error for a
    statement that read one, naming the table it reads when `sql` is known."""
    match = None if sql is None else _TABLE.search(sql)
    where = "the database" if match is None else f"table {match.group(1)}"
    return StoreCorrupted(
        f"store corrupted: a timestamp in {where} is outside the years 1 to 9999 that "
        f"taskpass reads; {_RESTORE}"
    )


# The first table a statement reads or writes (the store's statements name one first).
_TABLE = re.compile(r"\b(?:FROM|UPDATE|INTO)\s+(\w+)", re.IGNORECASE)


def positive(value: int) -> int:
    """`value` when it is an integer of at least 1 (a seq, a ttl), else ValueError."""
    if type(value) is not int or value < 1:
        raise ValueError("not a positive integer")
    return value
