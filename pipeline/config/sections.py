"""The settings tree: every section but ``kafka``, and :class:`Settings`, which reads the
documented short environment variables as well as ``QP_<SECTION>__<FIELD>``."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.config.base import Section, TykSection
from pipeline.config.kafka import KafkaSettings
from pipeline.config.sources import IngestSettings, TykSettings
from pipeline.records.checks import format_number, is_http_url
from pipeline.usage.held import HoldPolicy
from pipeline.webhooks.signing import check_secret

SHORT_ENV_VARS: dict[str, tuple[str, ...]] = {
    "QP_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "QP_WEB_PORT": ("web", "port"),
    "QP_WEB_BIND": ("web", "bind"),
    "QP_WEB_TOKEN": ("web", "token"),
    "QP_TEMPLATES_DIR": ("templates_dir",),
}


class TopicNames(Section):
    requests: str = "gateway.requests"
    sessions: str = "quota.sessions"
    orgs: str = "quota.orgs"
    triggers: str = "quota.triggers"
    portal_events: str = "portal.events"
    dlq: str = "notifications.dlq"
    rejected: str = "pipeline.rejected"


class WebhookConfig(TykSection):
    """Tyk's ``monitor.configuration``: the monitor webhook."""

    method: str = "POST"
    target_path: str = ""
    template_path: str = ""
    header_map: dict[str, str] = Field(default_factory=dict)
    #: Tyk's cooldown in seconds: an identical body to the same target is not re-sent within it.
    event_timeout: float = 0

    @field_validator("target_path")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not is_http_url(value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        # Tyk turns any other method into GET; so do we.
        upper = value.upper()
        return upper if upper in {"GET", "PUT", "POST", "DELETE", "PATCH"} else "GET"


def _check_percentage(limit: float) -> float:
    if not 0 < limit <= 100:
        raise ValueError(f"trigger limit {format_number(limit)} is outside (0, 100]")
    return limit


class MonitorConfig(TykSection):
    """Tyk's tyk.conf ``monitor`` section, read as-is, plus ``global_trigger_limits``."""

    enable_trigger_monitors: bool = False
    #: None (left out) for no global limit. Tyk writes 0 for that; here 0 is an error, as
    #: every limit outside (0, 100] is: it would never fire, and nothing would say why.
    global_trigger_limit: float | None = None
    global_trigger_limits: tuple[float, ...] = ()
    monitor_user_keys: bool = False
    monitor_org_keys: bool = False
    configuration: WebhookConfig = Field(default_factory=WebhookConfig)

    @field_validator("global_trigger_limit")
    @classmethod
    def _percentage(cls, value: float | None) -> float | None:
        if value is not None:
            try:
                _check_percentage(value)
            except ValueError as exc:
                raise ValueError(f"{exc}; leave it out for no global limit") from None
        return value

    @field_validator("global_trigger_limits")
    @classmethod
    def _percentages(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for limit in value:
            _check_percentage(limit)
        return value

    def global_thresholds(self) -> frozenset[float]:
        """The global thresholds: the list when given, else the single limit."""
        if self.global_trigger_limits:
            return frozenset(self.global_trigger_limits)
        if self.global_trigger_limit is not None:
            return frozenset({self.global_trigger_limit})
        return frozenset()


class EmailProviderSettings(TykSection):
    """Tyk's ``email_backend.settings``, keys spelt as Tyk spells them."""

    SMTPAddress: str = ""
    SMTPUsername: str = ""
    SMTPPassword: SecretStr = SecretStr("")
    TLSInsecureSkipVerify: bool = False
    ClientKey: SecretStr = SecretStr("")
    Domain: str = ""
    PrivateKey: SecretStr = SecretStr("")
    PublicKey: SecretStr = SecretStr("")
    Region: str = ""
    Endpoint: str = ""
    AccessKeyId: str = ""
    SecretAccessKey: SecretStr = SecretStr("")
    CharSet: str = "UTF-8"


class EmailBackend(TykSection):
    """Tyk Dashboard's ``email_backend`` section."""

    enable_email_notifications: bool = False
    code: Literal["smtp", "sendgrid", "mailgun", "mandrill", "amazonses"] = "smtp"
    settings: EmailProviderSettings = Field(default_factory=EmailProviderSettings)
    default_from_email: str = "quota-pipeline@localhost"
    default_from_name: str = "quota-pipeline"
    #: Provider API base URLs, e.g. {"sendgrid": "http://127.0.0.1:8025"}; defaults are public.
    base_urls: dict[str, str] = Field(default_factory=dict)
    #: Seconds over which an org address's key_request_event emails are batched into one
    #: digest (Tyk issue 186); 0 sends one email per request.
    key_request_digest: float = Field(default=0, ge=0)


#: Events in flight per delivery slot: see DeliverySettings.events_in_flight.
EVENTS_PER_DELIVERY = 32


class DeliverySettings(Section):
    #: Networks that targets may resolve into despite being non-global (loopback in the demo).
    allow_networks: tuple[str, ...] = ()
    #: Seconds to wait before each retry; its length is the number of retries.
    retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: The least wait after a 429, whatever the schedule says (Svix waits at least a minute).
    rate_limit_wait: float = Field(default=60, ge=0)
    timeout: float = Field(default=15, gt=0)
    connect_timeout: float = Field(default=5, gt=0)
    #: Standard Webhooks secrets, current first, older ones after it during rotation.
    signing_secrets: tuple[SecretStr, ...] = ()
    #: Secrets of chosen targets by URL prefix (the longest matching prefix wins). They replace
    #: ``signing_secrets`` for those targets; an empty list sends them unsigned.
    target_signing_secrets: dict[str, tuple[SecretStr, ...]] = Field(default_factory=dict)
    #: At most 384 KiB: a retry-tier record carries the body (in base64) and the event it
    #: came from, and must fit in Kafka's default record limit of 1 MiB.
    max_payload_bytes: int = Field(default=262_144, ge=1, le=393_216)
    #: In-flight deliveries per worker, and per endpoint within that.
    concurrency: int = Field(default=64, ge=1)
    per_endpoint_concurrency: int = Field(default=8, ge=1)

    @property
    def events_in_flight(self) -> int:
        """Events a delivery agent handles at once. Far more than requests in flight: events
        waiting for a slow endpoint's own slots (a timeout each, until its breaker opens) must
        not take every place, or deliveries to healthy endpoints stop behind them."""
        return self.concurrency * EVENTS_PER_DELIVERY

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not a network") from exc
        return value

    @field_validator("signing_secrets")
    @classmethod
    def _secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            check_secret(secret.get_secret_value())  # its ValueError names the expected form
        return value

    @field_validator("target_signing_secrets")
    @classmethod
    def _target_secrets(
        cls, value: dict[str, tuple[SecretStr, ...]]
    ) -> dict[str, tuple[SecretStr, ...]]:
        for secrets in value.values():
            cls._secrets(secrets)
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be >= 0")
        return value


class HoldSettings(Section):
    """How long, and how much, requests wait for their key's session or their org's record
    before they count (pipeline.usage.held); past these bounds they are dropped, and counted."""

    #: Seconds (wall clock) from the first request held for a subject.
    seconds: float = Field(default=3600, gt=0)
    #: Keys held at once per partition of gateway.requests.
    max_keys: int = Field(default=10_000, ge=0)
    #: Orgs held at once per partition of the org partials.
    max_orgs: int = Field(default=1_000, ge=0)

    def key_policy(self) -> HoldPolicy:
        return HoldPolicy(seconds=self.seconds, max_subjects=self.max_keys)

    def org_policy(self) -> HoldPolicy:
        return HoldPolicy(seconds=self.seconds, max_subjects=self.max_orgs)


class WebSettings(Section):
    port: int = Field(default=6066, ge=0, le=65535)
    bind: str = "127.0.0.1"
    token: SecretStr | None = None


class Settings(BaseSettings):
    """Everything a quota-pipeline process is told; see docs/contract.md, "Configuration"."""

    model_config = SettingsConfigDict(
        env_prefix="QP_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    app_id: str = "quota-pipeline"
    data_dir: Path = Path("data")
    #: "rocksdb" in production; "memory" keeps tables in RAM (tests, throwaway runs).
    store: Literal["rocksdb", "memory"] = "rocksdb"
    templates_dir: Path | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicNames = Field(default_factory=TopicNames)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    email_backend: EmailBackend = Field(default_factory=EmailBackend)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    hold: HoldSettings = Field(default_factory=HoldSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    tyk: TykSettings = Field(default_factory=TykSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: short variables, then QP_ nested variables, then the file (init kwargs).
        return (_ShortEnvSource(settings_cls), env_settings, init_settings)


class _ShortEnvSource(PydanticBaseSettingsSource):
    """Reads the documented short variables (QP_KAFKA_BOOTSTRAP ...) into their nested places."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ builds the whole mapping

    def __call__(self) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for variable, path in SHORT_ENV_VARS.items():
            if (value := os.environ.get(variable)) is None:
                continue
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return tree
