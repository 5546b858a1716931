"""The serving process keeps its startup objects out of later garbage collections."""

from __future__ import annotations

import gc

from taskpass.server.app import freeze_startup_heap


def test_objects_alive_at_startup_leave_the_collected_generations() -> None:
    gc.unfreeze()
    alive_before: list[object] = []  # a stand-in for what startup built (a tracked object)
    gc.collect()
    assert gc.get_freeze_count() == 0
    assert any(o is alive_before for o in gc.get_objects())
    try:
        freeze_startup_heap()

        assert gc.get_freeze_count() > 0
        assert not any(o is alive_before for o in gc.get_objects())  # no longer scanned
    finally:
        gc.unfreeze()
