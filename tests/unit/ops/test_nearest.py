"""pipeline.ops.nearest: the rows of keys and orgs counted against a limit in an open period,
and the top of them across workers."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.ops.nearest import TOP, key_ref, key_row, nearest, org_row
from pipeline.usage.quota import Period, UsageState
from tests.unit.samples import WATCHING

#: 2025-11-28 12:00:00 UTC.
T0 = 1764331200.0
HOUR = 3600
KEY = "sk_live_0123456789abcdef4711"
SECRET = b"key-refs-secret"
#: The defaults: no trigger monitor, so no thresholds.
PLAIN = Settings().monitor


def session(quota_max: float = 100, renewal: float = HOUR, **changes: Any) -> dict[str, Any]:
    """A session as the sessions table keeps it (compact_session)."""
    return {
        "quota_max": quota_max,
        "quota_renewal_rate": renewal,
        "trigger_limits": [],
        "org_id": "o",
        "developer_email": None,
        **changes,
    }


def org(quota_max: float = 1000, renewal: float = HOUR, **changes: Any) -> dict[str, Any]:
    """An org as the orgs table keeps it (compact_org)."""
    return {
        "quota_max": quota_max,
        "quota_renewal_rate": renewal,
        "trigger_limits": [],
        "event_options": {},
        **changes,
    }


def usage(
    used: int,
    start: float = T0,
    end: float | None = T0 + HOUR,
    fired: frozenset[float] = frozenset(),
) -> dict[str, Any]:
    """A usage state as the usage tables keep it, its current period from ``start``."""
    period = Period(start, float("inf") if end is None else end, used, fired)
    return UsageState(current=period).to_json()


def krow(key: str = KEY, stored: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"monitor": WATCHING, "now": T0 + 60, "secret": SECRET}
    return key_row(
        key,
        stored if stored is not None else session(),
        kwargs.pop("usage", usage(42)),
        **(arguments | kwargs),
    )


def orow(name: str = "acme", stored: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"monitor": WATCHING, "now": T0 + 60}
    return org_row(
        name,
        stored if stored is not None else org(),
        kwargs.pop("usage", usage(420)),
        **(arguments | kwargs),
    )


# --- rows -----------------------------------------------------------------------------------------


def test_a_key_counted_in_an_open_period_is_a_masked_row() -> None:
    row = krow(usage=usage(42, fired=frozenset({50.0})))

    assert row == {
        "key": "…4711",
        "org_id": "o",
        "period_start": T0,
        "period_end": T0 + HOUR,
        "usage": 42,
        "quota_max": 100,
        "usage_percentage": 42,
        "fired": ["50"],
        "thresholds": ["50", "80"],
        "ref": key_ref(KEY, SECRET),
    }


def test_an_org_counted_in_an_open_period_is_a_row_named_by_its_id() -> None:
    row = orow(stored=org(trigger_limits=[90]), usage=usage(925, fired=frozenset({90.0})))

    assert row == {
        "org": "acme",
        "period_start": T0,
        "period_end": T0 + HOUR,
        "usage": 925,
        "quota_max": 1000,
        "usage_percentage": 92.5,
        "fired": ["90"],
        "thresholds": ["90"],
        "ref": "acme",
    }


@pytest.mark.parametrize(
    "key",
    [KEY, "a" * 9, "short", "0123456789abcdef0123456789abcdef", "é-🔑-clé-secrète-47"],
)
def test_the_raw_key_never_appears_in_a_key_row(key: str) -> None:
    row = krow(key)

    assert row is not None
    assert key.encode() not in orjson.dumps(row)
    assert row["key"].startswith("…")


def test_the_row_shows_no_more_of_the_key_than_its_tail() -> None:
    dumped = orjson.dumps(krow()).decode()

    assert "sk_live" not in dumped
    assert "0123456789abcdef" not in dumped


def test_a_subject_without_thresholds_watched_is_still_a_row() -> None:
    row = krow(monitor=PLAIN)

    assert row is not None
    assert (row["usage_percentage"], row["thresholds"]) == (42, [])


@pytest.mark.parametrize("quota_max", [0, -1])
def test_an_unlimited_quota_has_no_row(quota_max: float) -> None:
    assert krow(stored=session(quota_max=quota_max)) is None
    assert orow(stored=org(quota_max=quota_max)) is None


@pytest.mark.parametrize(
    "stored_usage",
    [
        pytest.param(None, id="never seen"),
        pytest.param(UsageState().to_json(), id="no period"),
        pytest.param(
            UsageState(previous=Period(T0 - HOUR, T0, 90)).to_json(), id="only a previous period"
        ),
    ],
)
def test_a_subject_without_an_open_period_has_no_row(stored_usage: Any) -> None:
    assert krow(usage=stored_usage) is None
    assert orow(usage=stored_usage) is None


def test_a_period_that_has_ended_by_now_has_no_row() -> None:
    # Periods roll on the next record, not on a clock: the table still holds the old one.
    ended = usage(99, start=T0, end=T0 + HOUR)

    assert krow(usage=ended, now=T0 + HOUR - 0.001) is not None
    assert krow(usage=ended, now=T0 + HOUR) is None
    assert orow(usage=ended, now=T0 + 2 * HOUR) is None


def test_a_quota_that_never_renews_is_open_forever() -> None:
    row = krow(stored=session(renewal=0), usage=usage(7, end=None), now=T0 + 365 * 86400)

    assert row is not None
    assert (row["period_start"], row["period_end"], row["usage_percentage"]) == (T0, None, 7)


def test_no_usage_yet_in_an_open_period_is_a_row_at_zero() -> None:
    row = orow(usage=usage(0))

    assert row is not None
    assert row["usage_percentage"] == 0


def test_a_key_ref_is_stable_for_the_same_key_and_secret() -> None:
    # Two workers, two rows of the same key (an active and a standby partition).
    first, second = krow(), krow(usage=usage(40), now=T0 + 90)

    assert first["ref"] == second["ref"] == key_ref(KEY, bytes(SECRET))
    assert first["ref"] == krow(secret=b"key-refs-" + b"secret")["ref"]


def test_a_key_ref_differs_across_secrets_and_keys() -> None:
    other_key = "sk_test_fedcba9876543210" + KEY[-4:]

    assert krow(secret=b"one")["ref"] != krow(secret=b"two")["ref"]
    # The same mask, two keys: told apart by their refs.
    assert krow(other_key)["key"] == krow()["key"]
    assert krow(other_key)["ref"] != krow()["ref"]


# --- the nearest ----------------------------------------------------------------------------------


def org_rows(usages: dict[str, tuple[int, float]]) -> list[dict[str, Any]]:
    """Rows of orgs ``name -> (usage, quota_max)``."""
    rows = [
        orow(name, org(quota_max=quota), usage=usage(used))
        for name, (used, quota) in usages.items()
    ]
    assert None not in rows
    return rows


def test_the_nearest_are_the_top_rows_by_usage_percentage_highest_first() -> None:
    rows = org_rows({f"org-{i:02}": (i, 100) for i in range(30)})

    top = nearest(rows, top=5)

    assert [row["org"] for row in top] == ["org-29", "org-28", "org-27", "org-26", "org-25"]
    assert [row["usage_percentage"] for row in top] == [29, 28, 27, 26, 25]


def test_the_nearest_default_to_the_panels_size() -> None:
    rows = org_rows({f"org-{i:02}": (i, 100) for i in range(TOP + 10)})

    assert len(nearest(rows)) == TOP
    assert nearest([]) == []


def test_a_subject_past_its_quota_comes_first() -> None:
    rows = org_rows({"over": (1500, 1000), "near": (99, 100), "far": (1, 100)})

    assert [row["org"] for row in nearest(rows)] == ["over", "near", "far"]
    assert nearest(rows)[0]["usage_percentage"] == 150


def test_ties_are_broken_by_usage_then_the_same_way_whatever_the_order() -> None:
    # All at 50%: the larger usage first, then an order that does not depend on the input's.
    rows = org_rows({"b": (50, 100), "a": (500, 1000), "d": (50, 100), "c": (50, 100)})

    orders = {
        tuple(row["org"] for row in nearest(list(order))) for order in itertools.permutations(rows)
    }

    assert len(orders) == 1
    [order] = orders
    assert order[0] == "a"
    assert sorted(order[1:]) == ["b", "c", "d"]


def test_one_row_per_ref_keeps_the_higher_usage() -> None:
    # One key held by two workers: its active partition and a standby that lags behind.
    active = krow(usage=usage(80))
    standby = krow(usage=usage(60))
    other = krow("sk_live_another_key_000000009999", usage=usage(70))

    for rows in ([active, standby, other], [standby, other, active]):
        top = nearest(rows)
        assert [row["usage"] for row in top] == [80, 70]
        assert top[0] is active


def test_rows_of_subjects_without_a_row_are_skipped() -> None:
    rows = [None, *org_rows({"acme": (10, 100)}), None]

    assert [row["org"] for row in nearest(rows)] == ["acme"]
    assert nearest([None, None]) == []


#: Orgs and their quotas: two workers may hold an org's usage, at different counts.
QUOTAS = {f"org-{i}": (100, 250, 1000)[i % 3] for i in range(8)}


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(QUOTAS)), st.integers(min_value=0, max_value=2_000)),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=10),
    st.randoms(use_true_random=False),
)
def test_the_nearest_are_bounded_unique_sorted_and_order_free(
    held: list[tuple[str, int]], top: int, rng: Any
) -> None:
    rows = [orow(name, org(quota_max=QUOTAS[name]), usage=usage(used)) for name, used in held]
    shuffled = rows[:]
    rng.shuffle(shuffled)

    result = nearest(rows, top=top)

    assert len(result) == min(top, len({name for name, _ in held}))
    refs = [row["ref"] for row in result]
    assert len(refs) == len(set(refs))
    percentages = [row["usage_percentage"] for row in result]
    assert percentages == sorted(percentages, reverse=True)
    for row in result:
        assert row["usage"] == max(used for name, used in held if name == row["ref"])
    assert [(row["ref"], row["usage"]) for row in nearest(shuffled, top=top)] == [
        (row["ref"], row["usage"]) for row in result
    ]
    if result:
        # Nobody left out is nearer its quota than the last shown.
        best_left_out = [
            row["usage_percentage"]
            for row in nearest(rows, top=len(QUOTAS))
            if row["ref"] not in refs
        ]
        assert all(percentage <= percentages[-1] for percentage in best_left_out)
