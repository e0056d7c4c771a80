"""The server process tunes the garbage collector once it has started (server/__main__.py)."""

from __future__ import annotations

import gc

from server.__main__ import _tune_gc
from server.config import Settings


async def test_startup_objects_are_frozen_and_young_collections_made_rarer() -> None:
    before = gc.get_threshold()
    try:
        await _tune_gc(None, threshold=12_345)
        assert gc.get_threshold()[0] == 12_345
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tuning_is_on_by_default_and_zero_turns_it_off() -> None:
    assert Settings().gc_threshold == 50_000
    assert Settings(gc_threshold=0).gc_threshold == 0
