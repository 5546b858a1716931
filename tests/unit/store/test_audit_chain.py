"""verify_chain: an intact chain passes; every kind of tampering is found and named. HeadLog:
the head logged as an anchor outside the database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskpass.server.store.audit_chain import (
    GENESIS_HASH,
    ChainProblem,
    HeadLog,
    chain_hash,
    record_hash,
    verify_chain,
)
from taskpass.server.store.records import AuditRecord

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def build_chain(
    length: int, *, start_seq: int = 0, start_hash: str = GENESIS_HASH
) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = start_hash
    for seq in range(start_seq + 1, start_seq + length + 1):
        at = T0 + dt.timedelta(seconds=seq)
        payload = {"n": seq, "outcome": "allow"}
        digest = chain_hash(
            prev_hash=prev, seq=seq, kind="decision", actor="agent", at=at, payload=payload
        )
        records.append(
            AuditRecord(
                seq=seq,
                kind="decision",
                actor="agent",
                at=at,
                payload=payload,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
    return records


def forged(prev: AuditRecord, seq: int) -> AuditRecord:
    """A record an attacker made: correctly hashed, chained to `prev`."""
    payload = {"n": 0, "outcome": "forged"}
    digest = chain_hash(
        prev_hash=prev.hash, seq=seq, kind="decision", actor="agent", at=T0, payload=payload
    )
    return AuditRecord(
        seq=seq,
        kind="decision",
        actor="agent",
        at=T0,
        payload=payload,
        prev_hash=prev.hash,
        hash=digest,
    )


def edited_payload(c: list[AuditRecord]) -> list[AuditRecord]:
    c[2] = dataclasses.replace(c[2], payload={"n": 3, "outcome": "deny"})
    return c


def edited_actor(c: list[AuditRecord]) -> list[AuditRecord]:
    c[2] = dataclasses.replace(c[2], actor="someone-else")
    return c


def edited_time(c: list[AuditRecord]) -> list[AuditRecord]:
    c[2] = dataclasses.replace(c[2], at=c[2].at + dt.timedelta(microseconds=1))
    return c


def edited_and_rehashed(c: list[AuditRecord]) -> list[AuditRecord]:
    changed = dataclasses.replace(c[2], payload={"n": 3, "outcome": "deny"})
    c[2] = dataclasses.replace(changed, hash=record_hash(changed))
    return c


def deleted_middle(c: list[AuditRecord]) -> list[AuditRecord]:
    del c[2]
    return c


def deleted_first(c: list[AuditRecord]) -> list[AuditRecord]:
    del c[0]
    return c


def deleted_and_renumbered(c: list[AuditRecord]) -> list[AuditRecord]:
    del c[2]
    return [dataclasses.replace(r, seq=r.seq - 1) if r.seq > 3 else r for r in c]


def inserted(c: list[AuditRecord]) -> list[AuditRecord]:
    shifted = [dataclasses.replace(r, seq=r.seq + 1) if r.seq >= 3 else r for r in c]
    return [*shifted[:2], forged(c[1], 3), *shifted[2:]]


def reordered(c: list[AuditRecord]) -> list[AuditRecord]:
    c[2], c[3] = c[3], c[2]
    return c


def reordered_with_seqs_swapped(c: list[AuditRecord]) -> list[AuditRecord]:
    c[2], c[3] = dataclasses.replace(c[3], seq=3), dataclasses.replace(c[2], seq=4)
    return c


def duplicated(c: list[AuditRecord]) -> list[AuditRecord]:
    return [*c[:3], c[2], *c[3:]]


@pytest.mark.parametrize(
    ("tamper", "problem", "seq"),
    [
        pytest.param(edited_payload, ChainProblem.HASH_MISMATCH, 3, id="edited-payload"),
        pytest.param(edited_actor, ChainProblem.HASH_MISMATCH, 3, id="edited-actor"),
        pytest.param(edited_time, ChainProblem.HASH_MISMATCH, 3, id="edited-time"),
        pytest.param(edited_and_rehashed, ChainProblem.BROKEN_LINK, 4, id="edited-and-rehashed"),
        pytest.param(deleted_middle, ChainProblem.SEQ_GAP, 4, id="deleted-middle"),
        pytest.param(deleted_first, ChainProblem.SEQ_GAP, 2, id="deleted-first"),
        pytest.param(deleted_and_renumbered, ChainProblem.BROKEN_LINK, 3, id="deleted-renumbered"),
        pytest.param(inserted, ChainProblem.BROKEN_LINK, 4, id="inserted"),
        pytest.param(reordered, ChainProblem.SEQ_GAP, 4, id="reordered"),
        pytest.param(reordered_with_seqs_swapped, ChainProblem.BROKEN_LINK, 3, id="reordered-seqs"),
        pytest.param(duplicated, ChainProblem.SEQ_ORDER, 3, id="duplicated"),
    ],
)
def test_tampering_is_found_at_the_first_bad_record(
    tamper: Callable[[list[AuditRecord]], list[AuditRecord]], problem: ChainProblem, seq: int
) -> None:
    result = verify_chain(tamper(build_chain(6)))

    assert not result.ok
    assert (result.problem, result.seq) == (problem, seq)
    assert f"record {seq}" in result.message or f"before record {seq}" in result.message
    assert result.checked == result.last_seq  # every record before the bad one was good


@pytest.mark.parametrize("length", [0, 1, 6], ids=["empty", "one", "six"])
def test_intact_chain_verifies_and_reports_its_head(length: int) -> None:
    chain = build_chain(length)

    result = verify_chain(chain)

    assert result.ok
    assert result.checked == length
    assert result.last_seq == length
    assert result.last_hash == (chain[-1].hash if chain else GENESIS_HASH)
    assert result.problem is None


def test_verification_continues_from_the_head_of_a_previous_page() -> None:
    chain = build_chain(10)
    first = verify_chain(chain[:4])

    rest = verify_chain(chain[4:], after_seq=first.last_seq, after_hash=first.last_hash)

    assert rest.ok
    assert rest.last_seq == 10
    assert not verify_chain(chain[4:]).ok  # without the head it does not start at genesis


def test_hash_is_sha256_over_prev_hash_and_canonical_json() -> None:
    at = dt.datetime(2026, 6, 1, 14, 0, 0, 250, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    payload = {"b": [1, "ü"], "a": None}
    document = json.dumps(
        {
            "seq": 7,
            "kind": "issuance",
            "actor": "spiffe://example.org/a",
            "at": "2026-06-01T12:00:00.000250+00:00",
            "payload": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    expected = hashlib.sha256(("f" * 64 + document).encode()).hexdigest()

    assert (
        chain_hash(
            prev_hash="f" * 64,
            seq=7,
            kind="issuance",
            actor="spiffe://example.org/a",
            at=at,
            payload=payload,
        )
        == expected
    )


@given(
    length=st.integers(min_value=1, max_value=8),
    data=st.data(),
    value=st.one_of(st.integers(), st.text(max_size=8), st.none()),
)
def test_any_single_payload_edit_is_found_at_that_record(
    length: int, data: st.DataObject, value: object
) -> None:
    chain = build_chain(length)
    index = data.draw(st.integers(min_value=0, max_value=length - 1))
    chain[index] = dataclasses.replace(chain[index], payload={"n": value, "outcome": "allow"})
    if value == index + 1:  # the draw reproduced the original payload: nothing was edited
        return

    result = verify_chain(chain)

    assert (result.ok, result.seq) == (False, index + 1)


def test_the_head_is_logged_when_it_moved_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskpass.audit")
    every_change, hourly = HeadLog(every=0), HeadLog(every=3600)

    every_change.committed(1, "a" * 64)
    every_change.committed(1, "a" * 64)  # did not move: not logged again
    every_change.committed(2, "b" * 64)
    hourly.committed(3, "c" * 64)
    hourly.committed(4, "d" * 64)  # moved, but within the hour

    assert [r.getMessage() for r in caplog.records] == [
        f"audit head 1:{'a' * 64}",
        f"audit head 2:{'b' * 64}",
        f"audit head 3:{'c' * 64}",
    ]
    assert caplog.records[0].__dict__["audit_seq"] == 1
