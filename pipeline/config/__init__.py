"""One frozen settings tree, built once at start-up from the config file and QP_ environment.

Precedence, lowest first: defaults, the config file (JSON or TOML, named by ``--config`` or
``QP_CONFIG``), nested environment overrides (``QP_<SECTION>__<FIELD>``, e.g.
``QP_MONITOR__GLOBAL_TRIGGER_LIMIT=80``), and the documented short variables
(``QP_KAFKA_BOOTSTRAP``, ``QP_WEB_PORT`` ...). Secrets are ``SecretStr``: masked in every repr
and log line.
"""

from pipeline.config.kafka import KafkaSettings
from pipeline.config.loading import (
    describe_settings_error,
    describe_validation_error,
    environment_source,
    load_settings,
    read_config_file,
)
from pipeline.config.sections import (
    EVENTS_PER_DELIVERY,
    SHORT_ENV_VARS,
    DeliverySettings,
    EmailBackend,
    EmailProviderSettings,
    HoldSettings,
    MonitorConfig,
    Settings,
    TopicNames,
    WebhookConfig,
    WebSettings,
)
from pipeline.config.sources import (
    ApisixSource,
    IngestSettings,
    IngestSource,
    TykPumpSource,
    TykSettings,
)

__all__ = [
    "EVENTS_PER_DELIVERY",
    "SHORT_ENV_VARS",
    "ApisixSource",
    "DeliverySettings",
    "EmailBackend",
    "EmailProviderSettings",
    "HoldSettings",
    "IngestSettings",
    "IngestSource",
    "KafkaSettings",
    "MonitorConfig",
    "Settings",
    "TopicNames",
    "TykPumpSource",
    "TykSettings",
    "WebSettings",
    "WebhookConfig",
    "describe_settings_error",
    "describe_validation_error",
    "environment_source",
    "load_settings",
    "read_config_file",
]
