"""The serving process keeps its startup objects out of later garbage collections and collects
its young generation rarely (app.tune_garbage_collection)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from taskpass.server.app import YOUNG_COLLECTION_THRESHOLD, tune_garbage_collection


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_objects_alive_at_startup_leave_the_collected_generations() -> None:
    alive_before: list[object] = []  # a stand-in for what startup built (a tracked object)
    gc.collect()
    assert gc.get_freeze_count() == 0
    assert any(o is alive_before for o in gc.get_objects())

    tune_garbage_collection()

    assert gc.get_freeze_count() > 0
    assert not any(o is alive_before for o in gc.get_objects())  # no longer scanned


@pytest.mark.usefixtures("restored_collector")
def test_the_young_generation_is_collected_rarely_and_the_older_ones_as_before() -> None:
    gc.set_threshold(700, 10, 10)

    tune_garbage_collection()

    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 10, 10)
    assert gc.isenabled()  # automatic collection still runs (cyclic garbage is freed)
