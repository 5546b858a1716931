"""ReplicaChanges: each part of another replica's commit wakes whoever re-reads that table."""

from __future__ import annotations

import pytest

from taskpass.server.approvals.signals import RESYNC, ApprovalSignals
from taskpass.server.replication.changes import ReplicaChanges
from taskpass.server.store.base import StoreChange


class Woken:
    def __init__(self) -> None:
        self.revocations = 0
        self.keys = 0
        self.signals = ApprovalSignals()
        self.changes = ReplicaChanges(
            revocations=self._revocations, approvals=self.signals, keys=self._keys
        )

    def _revocations(self) -> None:
        self.revocations += 1

    def _keys(self) -> None:
        self.keys += 1


@pytest.mark.parametrize(
    ("change", "revocations", "keys"),
    [
        pytest.param(StoreChange(events=True), 1, 0, id="events"),
        pytest.param(StoreChange(keys=True), 0, 1, id="keys"),
        pytest.param(StoreChange(approvals=frozenset({"apr-9"})), 0, 0, id="approvals-only"),
        pytest.param(StoreChange(events=True, keys=True), 1, 1, id="both"),
        pytest.param(StoreChange(everything=True), 1, 1, id="everything"),
    ],
)
def test_each_change_wakes_exactly_what_re_reads_it(
    change: StoreChange, revocations: int, keys: int
) -> None:
    woken = Woken()

    woken.changes(change)

    assert (woken.revocations, woken.keys) == (revocations, keys)


async def test_a_decision_on_another_replica_wakes_only_the_exchange_waiting_for_it() -> None:
    woken = Woken()
    with woken.signals.waiter("apr-1") as mine, woken.signals.waiter("apr-2") as other:
        woken.changes(StoreChange(approvals=frozenset({"apr-1"})))

        assert mine.is_set()
        assert not other.is_set()


async def test_a_reconnect_wakes_every_waiter_and_resyncs_every_watcher() -> None:
    woken = Woken()
    with (
        woken.signals.waiter("apr-1") as one,
        woken.signals.waiter("apr-2") as two,
        woken.signals.subscribe() as watcher,
    ):
        woken.changes(StoreChange(everything=True))

        assert one.is_set()
        assert two.is_set()
        assert await anext(watcher.__aiter__()) == RESYNC
