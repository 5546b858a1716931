"""The audit log through the store: chained on append, gap-free when concurrent (every backend)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from taskpass.server.errors import InvalidRequest
from taskpass.server.store.audit_chain import GENESIS_HASH, record_hash, verify_chain
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import AuditEntry, JsonObject

from .builders import AGENT, T0, entry, issue


async def test_first_record_chains_from_genesis_and_the_next_from_it(store: Store) -> None:
    first = await store.audit.append(entry("decision", outcome="deny"))
    second = await store.audit.append(entry("decision", outcome="allow"))

    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert first.hash == record_hash(first)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert await store.audit.read(limit=10) == [first, second]


async def test_concurrent_issuances_get_gap_free_seqs_and_a_chain_that_verifies(
    store: Store,
) -> None:
    await asyncio.gather(*(issue(store, f"jti-{n}", task_id=f"task-{n}") for n in range(200)))

    records = await store.audit.read(limit=MAX_PAGE)
    assert [r.seq for r in records] == list(range(1, 201))
    assert sorted(r.payload["jti"] for r in records) == sorted(f"jti-{n}" for n in range(200))
    result = verify_chain(records)
    assert result.ok, result.message
    assert result.checked == 200


async def test_read_pages_after_a_seq(store: Store) -> None:
    for n in range(7):
        await store.audit.append(entry("decision", n=n))

    page = await store.audit.read(after_seq=2, limit=3)

    assert [r.seq for r in page] == [3, 4, 5]
    assert [r.payload["n"] for r in page] == [2, 3, 4]
    assert await store.audit.read(after_seq=7, limit=3) == []


@pytest.mark.parametrize(
    ("after_seq", "limit", "field"),
    [
        pytest.param(0, 0, "limit", id="zero-limit"),
        pytest.param(0, MAX_PAGE + 1, "limit", id="limit-over-max"),
        pytest.param(-1, 10, "seq", id="negative-after"),
    ],
)
async def test_read_refuses_a_bad_page(
    store: Store, after_seq: int, limit: int, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.audit.read(after_seq=after_seq, limit=limit)
    assert caught.value.field == field


async def test_timestamp_in_another_zone_is_stored_in_utc_and_still_verifies(
    store: Store,
) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    appended = await store.audit.append(entry("decision", at=T0.astimezone(paris)))

    [stored] = await store.audit.read(limit=1)
    assert stored == appended
    assert stored.at.utcoffset() == dt.timedelta(0)
    assert stored.at == T0
    assert verify_chain([stored]).ok


async def test_payload_with_nested_and_unicode_values_round_trips_and_verifies(
    store: Store,
) -> None:
    payload: JsonObject = {
        "z": [1, 2.5, None, True],
        "a": {"nested": "ünïcode ✓"},
        "empty": {},
    }
    await store.audit.append(AuditEntry(kind="decision", actor=AGENT, at=T0, payload=payload))

    [stored] = await store.audit.read(limit=1)
    assert stored.payload == payload
    assert verify_chain([stored]).ok
