"""The worker's garbage collector: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pipeline.service.worker import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_out_of_every_collection(restored_gc: None) -> None:
    built_at_start: list[object] = []
    gc.collect()
    assert any(obj is built_at_start for obj in gc.get_objects(generation=2))
    tune_gc()
    # In no generation: no collection walks it again.
    assert not any(obj is built_at_start for obj in gc.get_objects())


def test_a_young_collection_waits_for_tens_of_thousands_of_allocations(restored_gc: None) -> None:
    tune_gc()
    gc.collect()
    survivors = [[] for _ in range(5_000)]  # tracked containers, far below the threshold
    assert gc.get_count()[0] >= len(survivors)
