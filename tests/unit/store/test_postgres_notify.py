"""The NOTIFY payload: what a batch announces and what another replica makes of it."""

from __future__ import annotations

import pytest

from taskpass.server.store import postgres_notify as notify
from taskpass.server.store.base import StoreChange


def test_a_batch_announces_its_newest_event_seq_and_its_topics_once_each() -> None:
    payloads = notify.encode(
        event_seq=42, topics=["approval:apr_1", "keys", "approval:apr_1", "approval:apr_2"]
    )

    assert payloads == ["events:42 approval:apr_1 approval:apr_2 keys"]
    assert notify.decode(payloads[0]) == StoreChange(
        events=True, approvals=frozenset({"apr_1", "apr_2"}), keys=True
    )


def test_a_batch_without_events_or_topics_announces_nothing() -> None:
    assert notify.encode(event_seq=None, topics=[]) == []


def test_many_topics_are_split_below_the_postgres_payload_limit_and_none_is_lost() -> None:
    ids = [f"apr_{n:05}_{'x' * 30}" for n in range(600)]

    payloads = notify.encode(event_seq=7, topics=[notify.approval_topic(i) for i in ids])

    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    decoded = [notify.decode(p) for p in payloads]
    assert set().union(*(d.approvals for d in decoded)) == set(ids)
    assert sum(d.events for d in decoded) == 1


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("17", id="an-older-replica-bare-seq"),
        pytest.param("", id="empty"),
        pytest.param("events:17 policy:v9", id="an-unknown-topic"),
        pytest.param("events:x", id="a-bad-seq"),
        pytest.param("approval:", id="an-approval-without-id"),
    ],
)
def test_a_payload_not_understood_means_re_read_everything(payload: str) -> None:
    assert notify.decode(payload) == StoreChange(everything=True)
