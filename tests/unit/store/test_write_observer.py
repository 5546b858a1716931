"""Both backends report each committed write batch (operations, seconds) for the metrics."""

from __future__ import annotations

import asyncio

from taskpass.server.operations import ObservableWrites
from taskpass.server.store.base import Store
from tests.unit.store.builders import entry

from .conftest import StoreMaker


async def test_each_committed_batch_is_reported_with_its_size_and_duration(
    make_store: StoreMaker,
) -> None:
    store: Store = make_store()
    assert isinstance(store, ObservableWrites)
    batches: list[tuple[int, float]] = []
    store.observe_writes(lambda size, seconds: batches.append((size, seconds)))
    async with store:
        await store.audit.append(entry("one"))
        await asyncio.gather(*(store.audit.append(entry(f"many-{n}")) for n in range(20)))

    assert sum(size for size, _ in batches) == 21
    assert batches[0][0] == 1
    assert len(batches) < 21  # the concurrent appends shared batches
    assert all(seconds > 0 for _, seconds in batches)
