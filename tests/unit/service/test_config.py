"""pipeline.config: defaults, the config file, QP_ overrides, one-line errors, masked secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.config import MonitorConfig, Settings, load_settings
from pipeline.engine import Engine
from pipeline.errors import ConfigError

SIGNING_SECRET = "whsec_c2lnbmluZy1zZWNyZXQtdGhhdC1tdXN0LW5vdC1sZWFr"
SMTP_PASSWORD = "smtp-password-that-must-not-leak"
WEB_TOKEN = "web-token-that-must-not-leak"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the tests exports, each test starts with no QP_ variable."""
    for name in list(os.environ):
        if name.startswith("QP_"):
            monkeypatch.delenv(name)


def write_json(tmp_path: Path, data: Any, *, name: str = "quota.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_text(tmp_path: Path, text: str, *, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings()

    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.app_id == "quota-pipeline"
    assert settings.web.port == 6066
    assert settings.web.token is None
    assert settings.delivery.signing_secrets == ()
    assert settings.monitor.enable_trigger_monitors is False
    assert settings.monitor.configuration.method == "POST"


def test_default_topic_names_are_the_contracts() -> None:
    assert load_settings().topics.model_dump() == {
        "requests": "gateway.requests",
        "sessions": "quota.sessions",
        "orgs": "quota.orgs",
        "triggers": "quota.triggers",
        "portal_events": "portal.events",
        "dlq": "notifications.dlq",
        "rejected": "pipeline.rejected",
    }


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.app_id = "changed"  # type: ignore[misc]


# --- the config file ---------------------------------------------------------------------------


def test_json_file_loads(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "app_id": "qp-test",
            "kafka": {"bootstrap_servers": "broker:19092"},
            "topics": {"triggers": "alerts"},
            "monitor": {
                "enable_trigger_monitors": True,
                "global_trigger_limits": [80, 95],
                "monitor_user_keys": True,
                "configuration": {
                    "target_path": "https://hooks.example.com/quota",
                    "header_map": {"X-Env": "test"},
                    "event_timeout": 60,
                },
            },
            "delivery": {"retry_schedule": [1, 2.5], "allow_networks": ["127.0.0.0/8", "::1/128"]},
            "web": {"port": 7000},
        },
    )

    settings = load_settings(path)

    assert settings.app_id == "qp-test"
    assert settings.kafka.bootstrap_servers == "broker:19092"
    assert settings.topics.triggers == "alerts"
    assert settings.topics.requests == "gateway.requests"
    assert settings.monitor.enable_trigger_monitors is True
    assert settings.monitor.global_trigger_limits == (80, 95)
    assert settings.monitor.monitor_user_keys is True
    assert settings.monitor.configuration.target_path == "https://hooks.example.com/quota"
    assert settings.monitor.configuration.header_map == {"X-Env": "test"}
    assert settings.monitor.configuration.event_timeout == 60
    assert settings.delivery.retry_schedule == (1, 2.5)
    assert settings.delivery.allow_networks == ("127.0.0.0/8", "::1/128")
    assert settings.web.port == 7000


def test_toml_file_loads(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        """
app_id = "qp-toml"
data_dir = "/var/lib/qp"

[kafka]
bootstrap_servers = "broker:29092"

[monitor]
global_trigger_limit = 75.5

[monitor.configuration]
method = "put"

[delivery]
timeout = 3
""",
        name="quota.toml",
    )

    settings = load_settings(path)

    assert settings.app_id == "qp-toml"
    assert settings.data_dir == Path("/var/lib/qp")
    assert settings.kafka.bootstrap_servers == "broker:29092"
    assert settings.monitor.global_trigger_limit == 75.5
    assert settings.monitor.configuration.method == "PUT"
    assert settings.delivery.timeout == 3


def test_qp_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path, {"app_id": "from-qp-config"})
    monkeypatch.setenv("QP_CONFIG", str(path))

    assert load_settings().app_id == "from-qp-config"


def test_argument_wins_over_qp_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QP_CONFIG", str(write_json(tmp_path, {"app_id": "env"}, name="env.json")))
    argument = write_json(tmp_path, {"app_id": "argument"}, name="arg.json")

    assert load_settings(argument).app_id == "argument"


# --- environment overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "read", "expected"),
    [
        pytest.param(
            "QP_KAFKA_BOOTSTRAP",
            "env-broker:9093",
            lambda s: s.kafka.bootstrap_servers,
            "env-broker:9093",
            id="kafka-bootstrap",
        ),
        pytest.param("QP_APP_ID", "env-app", lambda s: s.app_id, "env-app", id="app-id"),
        pytest.param(
            "QP_DATA_DIR", "/srv/qp-data", lambda s: s.data_dir, Path("/srv/qp-data"), id="data-dir"
        ),
        pytest.param("QP_WEB_PORT", "7777", lambda s: s.web.port, 7777, id="web-port"),
        pytest.param(
            "QP_MONITOR__GLOBAL_TRIGGER_LIMIT",
            "90",
            lambda s: s.monitor.global_trigger_limit,
            90.0,
            id="nested-monitor-limit",
        ),
    ],
)
def test_environment_wins_over_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    read: Any,
    expected: Any,
) -> None:
    path = write_json(
        tmp_path,
        {
            "app_id": "file-app",
            "data_dir": "/file/data",
            "kafka": {"bootstrap_servers": "file-broker:9092"},
            "monitor": {"global_trigger_limit": 50},
            "web": {"port": 7000},
        },
    )
    assert read(load_settings(path)) != expected

    monkeypatch.setenv(variable, value)

    assert read(load_settings(path)) == expected


def test_nested_override_keeps_the_rest_of_the_files_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(
        tmp_path,
        {
            "monitor": {
                "enable_trigger_monitors": True,
                "global_trigger_limit": 50,
                "configuration": {"target_path": "https://hooks.example.com/q"},
            },
            "web": {"port": 7000, "bind": "0.0.0.0"},
        },
    )
    monkeypatch.setenv("QP_MONITOR__GLOBAL_TRIGGER_LIMIT", "80")
    monkeypatch.setenv("QP_WEB_PORT", "7001")

    settings = load_settings(path)

    assert settings.monitor.global_trigger_limit == 80
    assert settings.monitor.enable_trigger_monitors is True
    assert settings.monitor.configuration.target_path == "https://hooks.example.com/q"
    assert settings.web.port == 7001
    assert settings.web.bind == "0.0.0.0"


# --- errors: one ConfigError line --------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    message = config_error(missing)

    assert str(missing) in message
    assert "cannot read" in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param("bad.json", '{"app_id": ', "not valid JSON", id="truncated-json"),
        pytest.param("bad.json", "{'app_id': 'x'}", "not valid JSON", id="single-quotes"),
        pytest.param("bad.toml", "app_id = \n", "not valid TOML", id="bad-toml"),
        pytest.param("list.json", "[1, 2]", "object at the top level", id="json-array"),
        pytest.param("string.json", '"quota"', "object at the top level", id="json-string"),
        pytest.param("null.json", "null", "object at the top level", id="json-null"),
    ],
)
def test_unreadable_file_contents(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write_text(tmp_path, text, name=name)

    message = config_error(path)

    assert expected in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("data", "where", "why"),
    [
        pytest.param(
            {"delivery": {"retry_shedule": [5, 300]}},
            "delivery.retry_shedule",
            "Extra inputs",
            id="typo-in-delivery",
        ),
        pytest.param(
            {"kafka": {"bootstrap": "h:1"}}, "kafka.bootstrap", "Extra inputs", id="typo-in-kafka"
        ),
        pytest.param({"topic": {}}, "topic", "Extra inputs", id="unknown-top-level-section"),
        pytest.param({"web": {"port": "abc"}}, "web.port", "integer", id="port-not-a-number"),
        pytest.param({"web": {"port": 70000}}, "web.port", "65535", id="port-out-of-range"),
        pytest.param(
            {"monitor": {"global_trigger_limits": [80, 150]}},
            "monitor.global_trigger_limits",
            "150",
            id="global-limit-above-100",
        ),
        pytest.param(
            {"monitor": {"global_trigger_limits": [0]}},
            "monitor.global_trigger_limits",
            "outside (0, 100]",
            id="global-limit-zero",
        ),
        pytest.param(
            {"delivery": {"allow_networks": ["127.0.0.0/8", "not-a-network"]}},
            "delivery.allow_networks",
            "not-a-network",
            id="bad-allow-network",
        ),
        pytest.param(
            {"delivery": {"retry_schedule": [5, -1]}},
            "delivery.retry_schedule",
            ">= 0",
            id="negative-retry-delay",
        ),
        pytest.param(
            {"delivery": {"signing_secrets": ["whsec_not base64!"]}},
            "delivery.signing_secrets",
            "whsec_ followed by base64",
            id="bad-signing-secret",
        ),
        pytest.param(
            {"delivery": {"target_signing_secrets": {"https://a.example/": ["oops!"]}}},
            "delivery.target_signing_secrets",
            "whsec_ followed by base64",
            id="bad-target-signing-secret",
        ),
        pytest.param(
            {"delivery": {"signing_secrets": ["nope"]}},
            "delivery.signing_secrets",
            "whsec_ followed by base64",
            id="signing-secret-without-prefix",
        ),
        pytest.param(
            {"delivery": {"signing_secrets": ["whsec_"]}},
            "delivery.signing_secrets",
            "whsec_ followed by base64",
            id="empty-signing-secret",
        ),
        pytest.param(
            {"monitor": {"global_trigger_limit": 0}},
            "monitor.global_trigger_limit",
            "trigger limit 0 is outside (0, 100]; leave it out for no global limit",
            id="global-limit-zero-is-not-off",
        ),
        pytest.param(
            {"monitor": {"global_trigger_limit": -5}},
            "monitor.global_trigger_limit",
            "trigger limit -5 is outside (0, 100]",
            id="global-limit-negative",
        ),
        pytest.param(
            {"monitor": {"global_trigger_limits": [50, 100.0001]}},
            "monitor.global_trigger_limits",
            "trigger limit 100.0001 is outside (0, 100]",
            id="global-limits-as-written",
        ),
        pytest.param(
            {"monitor": {"configuration": {"target_path": "not a url"}}},
            "monitor.configuration.target_path",
            "is not an http(s) URL",
            id="monitor-target-not-a-url",
        ),
        pytest.param(
            {"hold": {"seconds": 0}},
            "hold.seconds",
            "greater than 0",
            id="hold-for-no-time",
        ),
        pytest.param(
            {"email_backend": {"code": "pigeon"}},
            "email_backend.code",
            "smtp",
            id="unknown-email-provider",
        ),
    ],
)
def test_bad_settings_name_the_setting_in_one_line(
    tmp_path: Path, data: dict[str, Any], where: str, why: str
) -> None:
    path = write_json(tmp_path, data)

    message = config_error(path)

    assert f"bad setting {where} in {path}" in message
    assert why in message


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QP_WEB_PORT", "abc")

    with pytest.raises(ConfigError, match=r"web\.port in QP_WEB_PORT"):
        load_settings()


def test_bad_environment_value_is_not_blamed_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_json(tmp_path, {"web": {"port": 7000}})
    monkeypatch.setenv("QP_WEB_PORT", "abc")

    message = config_error(path)

    assert str(path) not in message


def test_unknown_keys_in_tyks_sections_are_ignored(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "monitor": {
                "global_trigger_limit": 80,
                "not_a_tyk_key": True,
                "configuration": {"method": "POST", "webhook_handler_extra": 1},
            },
            "email_backend": {
                "code": "sendgrid",
                "dashboard_only_field": "x",
                "settings": {"ClientKey": "sg-key", "SomeFutureTykSetting": 3},
            },
        },
    )

    settings = load_settings(path)

    assert settings.monitor.global_trigger_limit == 80
    assert settings.email_backend.code == "sendgrid"
    assert settings.email_backend.settings.ClientKey.get_secret_value() == "sg-key"


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_never_show_in_repr_or_str(tmp_path: Path) -> None:
    path = write_json(
        tmp_path,
        {
            "delivery": {"signing_secrets": [SIGNING_SECRET]},
            "email_backend": {"settings": {"SMTPPassword": SMTP_PASSWORD}},
            "web": {"token": WEB_TOKEN},
        },
    )

    settings = load_settings(path)

    # The secrets are loaded ...
    assert settings.delivery.signing_secrets[0].get_secret_value() == SIGNING_SECRET
    assert settings.email_backend.settings.SMTPPassword.get_secret_value() == SMTP_PASSWORD
    assert settings.web.token is not None
    assert settings.web.token.get_secret_value() == WEB_TOKEN
    # ... and never shown.
    for shown in (repr(settings), str(settings), repr(settings.delivery), str(settings.web)):
        for secret in (SIGNING_SECRET, SMTP_PASSWORD, WEB_TOKEN):
            assert secret not in shown


def test_secret_from_the_environment_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QP_WEB_TOKEN", WEB_TOKEN)

    settings = load_settings()

    assert settings.web.token is not None
    assert settings.web.token.get_secret_value() == WEB_TOKEN
    assert WEB_TOKEN not in repr(settings)


# --- the monitor section -----------------------------------------------------------------------


def monitor(**fields: Any) -> MonitorConfig:
    return MonitorConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, frozenset(), id="nothing-set"),
        pytest.param({"global_trigger_limit": 80}, frozenset({80.0}), id="single-limit"),
        pytest.param(
            {"global_trigger_limits": [50, 80, 80]}, frozenset({50.0, 80.0}), id="list-is-a-set"
        ),
        pytest.param(
            {"global_trigger_limit": 90, "global_trigger_limits": [50, 75]},
            frozenset({50.0, 75.0}),
            id="list-wins-over-single",
        ),
        pytest.param(
            {"global_trigger_limit": 90, "global_trigger_limits": []},
            frozenset({90.0}),
            id="empty-list-falls-back",
        ),
    ],
)
def test_global_thresholds(fields: dict[str, Any], expected: frozenset[float]) -> None:
    assert monitor(**fields).global_thresholds() == expected


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("post", "POST"),
        ("Put", "PUT"),
        ("delete", "DELETE"),
        ("patch", "PATCH"),
        ("GET", "GET"),
        ("HEAD", "GET"),
        ("teleport", "GET"),
        ("", "GET"),
    ],
)
def test_monitor_method_is_upper_cased_and_unknown_becomes_get(method: str, expected: str) -> None:
    assert monitor(configuration={"method": method}).configuration.method == expected


def test_settings_class_reads_only_qp_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ID", "not-ours")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "not-ours:1")

    settings = Settings()

    assert settings.app_id == "quota-pipeline"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.parametrize(("configured", "standbys"), [({}, 0), ({"standby_replicas": 1}, 1)])
def test_standby_replicas_reach_the_faust_app(configured: dict[str, int], standbys: int) -> None:
    settings = Settings.model_validate({"kafka": configured})

    app = Engine(settings).app

    assert app.conf.table_standby_replicas == standbys


@pytest.mark.parametrize(
    ("configured", "fetch_bytes"),
    [({}, 4 * 1024 * 1024), ({"max_partition_fetch_bytes": 65_536}, 65_536)],
)
def test_the_partition_fetch_size_reaches_the_faust_app(
    configured: dict[str, int], fetch_bytes: int
) -> None:
    app = Engine(Settings.model_validate({"kafka": configured})).app

    assert app.conf.consumer_max_fetch_size == fetch_bytes


def test_a_partition_fetch_smaller_than_a_kilobyte_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_partition_fetch_bytes"):
        Settings.model_validate({"kafka": {"max_partition_fetch_bytes": 10}})


def test_the_example_config_loads_and_shows_every_section() -> None:
    example = Path(__file__).parents[3] / "deploy" / "config.example.json"
    settings = load_settings(str(example))
    assert settings.monitor.enable_trigger_monitors
    sections = {
        name
        for name, field in Settings.model_fields.items()
        if hasattr(field.annotation, "model_fields")
    }
    assert sections <= set(json.loads(example.read_text()))
