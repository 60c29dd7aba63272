"""The fuzz tier: every test here (and tests/integration/test_fuzz_mix.py) is marked ``fuzz``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/fuzz" in str(item.path):
            item.add_marker(pytest.mark.fuzz)
