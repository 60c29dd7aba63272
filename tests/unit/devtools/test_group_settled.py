"""When workers share the partitions: all ready, in one consumer group generation."""

from __future__ import annotations

import pytest

from pipeline.devtools.local import group_settled


@pytest.mark.parametrize(
    ("readings", "settled"),
    [
        ([(True, 2), (True, 2)], True),
        ([(True, 1)], True),
        # The first is still ready from before the second joined: it keeps every partition.
        ([(True, 1), (True, 2)], False),
        ([(True, 2), (False, 2)], False),
        ([(True, 2), (False, None)], False),  # not answering yet
        ([(True, None)], False),
    ],
)
def test_settled_only_when_all_are_ready_in_the_same_generation(readings, settled):
    assert group_settled(readings) is settled
