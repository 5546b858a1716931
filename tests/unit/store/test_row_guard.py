"""row_guard: what a row reader's failure is reported as (the store-level cases are in
test_unreadable_rows.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from taskpass.server.errors import ErrorCode, StoreCorrupted
from taskpass.server.store.row_guard import Column, positive, reads, timestamp_out_of_range

RESTORE = (
    "the database may have been edited outside taskpass or damaged: "
    "restore the row from a backup, or correct it"
)


@reads("things", Column(1, "payload", json.loads), Column(2, "count", positive))
def thing_from_row(row: Sequence[Any]) -> tuple[int, object, int]:
    return int(row[0]), json.loads(row[1]), positive(row[2])


def test_a_good_row_is_read_as_the_reader_reads_it() -> None:
    assert thing_from_row(("7", '{"a":1}', 3)) == (7, {"a": 1}, 3)


@pytest.mark.parametrize(
    ("row", "where"),
    [
        pytest.param(("7", "{", 3), "column payload of table things", id="first-bad-column"),
        pytest.param(("7", "{}", 0), "column count of table things", id="second-bad-column"),
        pytest.param(("7", "[", -1), "column payload of table things", id="first-of-two"),
        pytest.param(("seven", "{}", 3), "a row of table things", id="a-column-not-listed"),
    ],
)
def test_a_bad_row_names_the_first_bad_column_it_lists(row: tuple[Any, ...], where: str) -> None:
    with pytest.raises(StoreCorrupted) as caught:
        thing_from_row(row)

    assert caught.value.message == (
        f"store corrupted: {where} holds a value taskpass cannot have written "
        f"(out of range or malformed); {RESTORE}"
    )
    assert caught.value.code is ErrorCode.DATA_LOSS
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param(1, True, id="one"),
        pytest.param(0, False, id="zero"),
        pytest.param(-5, False, id="negative"),
        pytest.param(True, False, id="bool"),
        pytest.param(2.0, False, id="float"),
        pytest.param("3", False, id="text"),
    ],
)
def test_positive_takes_integers_from_one(value: Any, ok: bool) -> None:
    if ok:
        assert positive(value) == value
    else:
        with pytest.raises(ValueError, match="not a positive integer"):
            positive(value)


@pytest.mark.parametrize(
    ("sql", "where"),
    [
        pytest.param("SELECT a FROM credentials WHERE jti = $1", "table credentials", id="select"),
        pytest.param(
            "WITH head AS (SELECT max(seq) FROM revocation_events) SELECT 1 FROM head",
            "table revocation_events",
            id="with",
        ),
        pytest.param("UPDATE approvals SET x = 1 RETURNING y", "table approvals", id="update"),
        pytest.param("SELECT 1", "the database", id="no-table"),
        pytest.param(None, "the database", id="unknown-statement"),
    ],
)
def test_a_timestamp_postgres_holds_but_python_cannot_names_the_table_read(
    sql: str | None, where: str
) -> None:
    error = timestamp_out_of_range(sql)

    assert isinstance(error, StoreCorrupted)
    assert error.code is ErrorCode.DATA_LOSS
    assert error.message == (
        f"store corrupted: a timestamp in {where} is outside the years 1 to 9999 that "
        f"taskpass reads; {RESTORE}"
    )
