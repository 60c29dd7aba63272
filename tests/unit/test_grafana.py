"""deploy/grafana/quota-pipeline.json stays an importable dashboard of the worker's metrics:
valid dashboard JSON whose panels all query the Prometheus of the import (`${DS_PROMETHEUS}`),
whose every PromQL expression names only series the worker exposes (pipeline.service.metrics),
filtered by the dashboard's job and instance, and which shows every metric the worker has."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from pipeline.service.metrics import REGISTRY

ROOT = Path(__file__).parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "quota-pipeline.json"

INPUT = "DS_PROMETHEUS"
DATASOURCE = {"type": "prometheus", "uid": "${" + INPUT + "}"}
#: The dashboard's 24 columns.
WIDTH = 24

#: Sample names prometheus_client exposes for a metric family, by the family's type. A counter's
#: family name is given without `_total`; `_created` series are left out on purpose (they can
#: be turned off, PROMETHEUS_DISABLE_CREATED_SERIES, so a dashboard must not rely on them).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}

#: Metrics of pipeline/service/metrics.py that no panel needs to show, each with the reason.
#: Empty: every metric the worker exposes has a panel.
NOT_ON_THE_DASHBOARD: dict[str, str] = {}

#: A metric name in a PromQL expression.
METRIC = re.compile(r"\bquota_pipeline_[a-z0-9_]+")
#: Series Prometheus itself adds to every scrape target, which a panel may query too.
SCRAPE_SERIES = ("up",)
#: A selector of a quota_pipeline metric, or of a scrape series, with its label matchers.
SELECTOR = re.compile(
    r"(?<![\w:])(?P<name>quota_pipeline_[a-z0-9_]+|"
    + "|".join(SCRAPE_SERIES)
    + r"(?=\s*\{))\s*(?P<matchers>\{[^}]*\})?"
)
#: The matchers every selector carries: the dashboard's variables.
FILTERS = ('job=~"$job"', 'instance=~"$instance"')


# --- reading -----------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels of a collapsed row."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels() -> list[dict[str, Any]]:
    return [panel for panel in all_panels(dashboard()["panels"]) if panel["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    return [
        (panel["title"], target["expr"]) for panel in query_panels() for target in panel["targets"]
    ]


def variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def exposed(family: Metric) -> set[str]:
    """The sample names prometheus_client exposes for ``family``."""
    if family.type not in SUFFIXES:
        pytest.fail(f"{family.name}: a {family.type}; add its suffixes to SUFFIXES")
    return {family.name + suffix for suffix in SUFFIXES[family.type]}


def families(registry: CollectorRegistry = REGISTRY) -> dict[str, set[str]]:
    """Each metric family of ``registry`` (by the name it was defined with, a counter's without
    `_total`) and the sample names it exposes."""
    return {family.name: exposed(family) for family in registry.collect()}


def exposed_names() -> set[str]:
    return {name for names in families().values() for name in names}


# --- the suffix rule is prometheus_client's ---------------------------------------------------


def test_the_suffixes_are_what_prometheus_client_exposes() -> None:
    """On a registry of its own (the worker's is left as it is): one metric of each type, with
    a labelled child so that its samples appear, exposes exactly what SUFFIXES says."""
    registry = CollectorRegistry()
    counter = Counter("probe_events", "a counter", ["x"], registry=registry)
    gauge = Gauge("probe_level", "a gauge", ["x"], registry=registry)
    histogram = Histogram("probe_seconds", "a histogram", ["x"], registry=registry)
    counter.labels(x="1").inc()
    gauge.labels(x="1").set(1)
    histogram.labels(x="1").observe(0.1)
    text = generate_latest(registry).decode()
    samples = {
        match
        for match in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, flags=re.MULTILINE)
        if not match.endswith("_created")
    }
    assert samples == {name for names in families(registry).values() for name in names}
    assert samples == {
        "probe_events_total",
        "probe_level",
        "probe_seconds_bucket",
        "probe_seconds_sum",
        "probe_seconds_count",
    }


def test_the_worker_registry_has_the_metrics_of_metrics_py() -> None:
    source = (ROOT / "pipeline" / "service" / "metrics.py").read_text(encoding="utf-8")
    defined = set(re.findall(r"^\s+\"(quota_pipeline_[a-z0-9_]+)\",$", source, flags=re.M))
    assert defined
    assert defined == set(families())


# --- valid dashboard JSON ----------------------------------------------------------------------


def test_the_dashboard_is_importable_onto_any_prometheus() -> None:
    data = dashboard()
    assert data["title"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", data["uid"])
    assert data["id"] is None  # an export: Grafana gives it an id on import
    assert 36 <= data["schemaVersion"] <= 41
    assert data["__inputs"] == [
        {
            "name": INPUT,
            "label": "Prometheus",
            "description": data["__inputs"][0]["description"],
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    required = {(item["type"], item["id"]) for item in data["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    used_types = {panel["type"] for panel in query_panels()}
    assert {id_ for kind, id_ in required if kind == "panel"} == used_types
    # No datasource but the input's (and Grafana's own, for the built-in annotations).
    text = DASHBOARD.read_text(encoding="utf-8")
    uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {data["uid"]}
    assert uids == {DATASOURCE["uid"], "-- Grafana --"}


def test_the_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(all_panels(dashboard()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(id_, int) for id_ in ids)
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert all(isinstance(grid[key], int) and grid[key] >= 0 for key in "hwxy")
        assert grid["h"] > 0
        assert grid["w"] > 0
        assert grid["x"] + grid["w"] <= WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_rows_are_the_expected_ones() -> None:
    rows = [panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"]
    assert rows == ["Flow", "Deliveries", "Held requests & portal"]


def test_every_panel_queries_the_input_datasource() -> None:
    panels = query_panels()
    assert panels
    titles = [panel["title"] for panel in panels]
    assert len(titles) == len(set(titles))
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description"), panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_variables_filter_by_job_and_instance() -> None:
    found = variables()
    assert set(found) == {"job", "instance"}
    for name, variable in found.items():
        assert variable["type"] == "query", name
        assert variable["datasource"] == DATASOURCE, name
        query = variable["query"]["query"]
        assert query == variable["definition"], name
        selector = r'\{__name__=~"quota_pipeline_\.\+".*\}'
        assert re.fullmatch(rf"label_values\({selector}, {name}\)", query), name
    assert 'job=~"$job"' in found["instance"]["query"]["query"]
    # Every worker by default, one or a few to see them apart.
    assert found["instance"]["multi"]
    assert found["instance"]["includeAll"]
    assert found["instance"]["allValue"] == ".*"


def test_every_selector_is_filtered_by_the_variables() -> None:
    for title, expr in expressions():
        selectors = list(SELECTOR.finditer(expr))
        assert selectors, f"{title}: {expr}"
        for selector in selectors:
            matchers = selector["matchers"] or ""
            for wanted in FILTERS:
                assert wanted in matchers, f"{title}: {selector['name']} without {wanted}"


def test_the_breaker_state_is_shown_by_name() -> None:
    names = {"0": "closed", "1": "half open", "2": "open"}
    shown = []
    for panel in query_panels():
        if not any("quota_pipeline_breaker_state{" in t["expr"] for t in panel["targets"]):
            continue
        config = panel["fieldConfig"]
        mappings = list(config["defaults"]["mappings"])
        for override in config["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "mappings":
                    mappings += prop["value"]
        texts = {
            value: option["text"]
            for mapping in mappings
            if mapping["type"] == "value"
            for value, option in mapping["options"].items()
        }
        assert texts == names, panel["title"]
        shown.append(panel["type"])
    assert "state-timeline" in shown


# --- the metrics: each one exposed, each metric shown ------------------------------------------


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=lambda value: value[:60])
def test_every_metric_of_an_expression_is_exposed_by_the_worker(title: str, expr: str) -> None:
    used = set(METRIC.findall(expr))
    if not used:  # only what Prometheus adds to a scrape (up), and filtered by the variables
        assert {match["name"] for match in SELECTOR.finditer(expr)} <= set(SCRAPE_SERIES), title
    assert used <= exposed_names(), f"{title}: not exposed: {sorted(used - exposed_names())}"


def test_every_metric_of_the_worker_is_on_the_dashboard() -> None:
    used = {name for _, expr in expressions() for name in METRIC.findall(expr)}
    missing = {
        family
        for family, names in families().items()
        if not names & used and family not in NOT_ON_THE_DASHBOARD
    }
    # A metric without a panel: add one, or list it in NOT_ON_THE_DASHBOARD with the reason.
    assert missing == set()
    # The allowlist holds only metrics that exist and that no panel shows after all.
    assert set(NOT_ON_THE_DASHBOARD) <= set(families())
    assert not {family for family in NOT_ON_THE_DASHBOARD if families()[family] & used}


def test_the_readme_names_the_dashboard_and_the_scrape_port() -> None:
    readme = (GRAFANA / "README.md").read_text(encoding="utf-8")
    assert DASHBOARD.name in readme
    assert "6066" in readme
    assert "/metrics" in readme
    for row in ("Flow", "Deliveries", "Held requests & portal"):
        assert row in readme
    assert "grafana/" in (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
