"""The bench's pure part (pipeline.bench.plan): load plans, percentiles, target verdicts."""

from __future__ import annotations

import collections
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.bench.plan import (
    COUNT_MAX,
    CROSSING_EVERY,
    TARGETS,
    KeySampler,
    OrgLayout,
    Target,
    crossing_keys,
    latency_plan,
    parse_skew,
    percentile,
    plan_load,
    verdict,
)


@pytest.mark.parametrize(
    ("text", "exponent"), [("zipf:1.2", 1.2), ("zipf:1", 1.0), ("zipf:0.5", 0.5)]
)
def test_parse_skew_reads_the_exponent(text, exponent):
    assert parse_skew(text) == exponent


@pytest.mark.parametrize(
    "text", ["zipf", "zipf:", "zipf:x", "zipf:0", "zipf:-1", "zipf:nan", "zipf:inf", "pareto:1", ""]
)
def test_parse_skew_refuses_anything_else(text):
    with pytest.raises(ValueError, match="zipf"):
        parse_skew(text)


@given(st.integers(1, 300), st.one_of(st.none(), st.floats(0.1, 3)), st.integers(0, 2**32))
def test_samplers_stay_within_their_keys(n, exponent, seed):
    sampler = KeySampler(n, exponent)
    rng = random.Random(seed)
    assert all(0 <= sampler.draw(rng) < n for _ in range(50))


def test_zipf_favours_the_first_keys_and_uniform_does_not():
    rng = random.Random(3)
    zipf = collections.Counter(KeySampler(100, 1.2).draw(rng) for _ in range(20_000))
    uniform = collections.Counter(KeySampler(100).draw(rng) for _ in range(20_000))
    assert zipf[0] > zipf[1] > zipf[10] > zipf[99]
    # Under zipf:1.2 over 100 keys, key 0 has about a quarter of the draws; uniformly 1%.
    assert zipf[0] > 0.2 * 20_000
    assert max(uniform.values()) < 0.02 * 20_000


@given(
    st.integers(1, 50),
    st.integers(1, 10),
    st.one_of(st.none(), st.just(0.9)),
    st.one_of(st.none(), st.floats(0.5, 2)),
)
def test_every_planned_record_names_a_key_its_org_and_a_count(keys, orgs, share, exponent):
    layout = OrgLayout(keys, orgs, share)
    for record in plan_load(200, layout, exponent=exponent):
        assert 0 <= record.key < keys
        assert record.org == layout.org_of(record.key)
        assert 0 <= record.org < orgs
        assert 1 <= record.requests <= COUNT_MAX


def test_even_layout_spreads_keys_round_robin():
    layout = OrgLayout(keys=10, orgs=3)
    assert [layout.org_of(k) for k in range(10)] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("exponent", [None, 1.2])
def test_skewed_plan_gives_the_heavy_org_ninety_percent(exponent):
    layout = OrgLayout(keys=1000, orgs=10, heavy_share=0.9)
    orgs = collections.Counter(r.org for r in plan_load(20_000, layout, exponent=exponent))
    assert 0.88 < orgs[0] / 20_000 < 0.92
    assert set(orgs) == set(range(10))


def test_skewed_layout_gives_the_heavy_org_its_share_of_the_keys():
    layout = OrgLayout(keys=1000, orgs=10, heavy_share=0.9)
    assert layout.heavy_keys == 900
    owners = collections.Counter(layout.org_of(k) for k in range(1000))
    assert owners[0] == 900
    assert all(owners[org] in (11, 12) for org in range(1, 10))


@pytest.mark.parametrize(("keys", "orgs"), [(1, 5), (5, 1)])
def test_skewed_layout_without_another_org_or_key_puts_all_on_the_heavy_one(keys, orgs):
    layout = OrgLayout(keys, orgs, heavy_share=0.9)
    assert layout.heavy_keys == keys
    assert {r.org for r in plan_load(100, layout)} == {0}


def test_the_plan_is_the_same_for_the_same_seed():
    layout = OrgLayout(keys=50, orgs=5, heavy_share=0.9)
    assert list(plan_load(100, layout, seed=7)) == list(plan_load(100, layout, seed=7))


@pytest.mark.parametrize("every", [1, 10, CROSSING_EVERY])
def test_latency_records_cross_once_in_every_nth_on_fresh_keys(every: int):
    plan = list(itertools.islice(latency_plan(7, every), 10 * every))
    crossing = [key for is_crossing, key in plan if is_crossing]
    assert crossing == list(range(10)) == list(range(crossing_keys(len(plan), every)))
    assert all(0 <= key < 7 for is_crossing, key in plan if not is_crossing)


def test_latency_background_keys_are_drawn_as_the_usage_run_draws_them():
    # Half the measured maximum of the same traffic: zipf keys stay zipf, uniform stay uniform.
    def background(exponent):
        plan = itertools.islice(latency_plan(1000, 100, exponent=exponent), 50_000)
        return collections.Counter(key for is_crossing, key in plan if not is_crossing)

    zipf, uniform = background(1.2), background(None)
    assert zipf[0] > 0.15 * sum(zipf.values())  # the hottest key: about a fifth at S = 1.2
    assert max(uniform.values()) < 0.01 * sum(uniform.values())
    assert len(uniform) == 1000


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0, 100), st.floats(0, 100))
def test_percentiles_are_values_in_order_within_the_range(values, q1, q2):
    low, high = sorted((q1, q2))
    assert percentile(values, low) <= percentile(values, high)
    assert percentile(values, low) in values
    assert percentile(values, 100) == max(values)
    assert percentile(values, 0) == min(values)


def test_percentiles_by_nearest_rank():
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 99.5)) == (
        50,
        99,
        100,
    )
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_verdicts_at_least_and_at_most():
    at_least, at_most = Target(0.5, at_least=True), Target(1.0, at_least=False)
    assert (verdict(at_least, 0.5), verdict(at_least, 0.49)) == ("met", "not met")
    assert (verdict(at_most, 1.0), verdict(at_most, 1.01)) == ("met", "not met")
    assert verdict(at_least, None) == "n/a"


def test_key_bound_targets_pass_only_at_their_size_but_fail_below_it():
    rss = TARGETS["peak_rss_mb"]
    assert verdict(rss, 900, active_keys=1_000_000) == "met"
    assert verdict(rss, 900, active_keys=10_000) == "n/a"
    assert verdict(rss, 2000, active_keys=10_000) == "not met"
    assert "1,000,000 keys" in rss.text()
