"""Where traffic and sessions come from when gateways do not speak our contract: the ``ingest``
section (gateways' own Kafka topics, re-keyed into gateway.requests) and the ``tyk`` section
(the Tyk Gateway whose key sessions `quota-pipeline sessions sync` reads)."""

from __future__ import annotations

from typing import Annotated, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.records.checks import is_http_url

#: Tyk's own refusals that come before a key's quota is counted (gateway/api_loader.go: auth,
#: KeyExpired and AccessRightsCheck run before RateLimitAndQuotaCheck, and a key's rate limit
#: refuses before its quota counter moves): 401 no key or an expired one, 403 an unknown,
#: inactive or not allowed key, 429 the key's rate limit. See docs/ingest.md.
TYK_REFUSED_CODES = (401, 403, 429)


def _check_path(value: str | None) -> str | None:
    if value is not None:
        try:
            jmespath.compile(value)
        except JMESPathError as exc:
            raise ValueError(f"{value!r} is not a JMESPath expression: {exc}") from None
    return value


class TykPumpSource(Section):
    """A topic that Tyk Pump's Kafka pump writes to."""

    format: Literal["tyk-pump"]
    topic: str = Field(min_length=1)
    #: Response codes that, made by Tyk itself, mean a request refused before it counted
    #: against its key's quota. Such a record counts for the org only. An upstream's response
    #: with one of these codes counts for the key when the record carries the response
    #: (``raw_response``, with detailed recording on) to tell them apart.
    refused_codes: tuple[int, ...] = TYK_REFUSED_CODES


class ApisixSource(Section):
    """A topic that APISIX's kafka-logger plugin writes to (``meta_format`` default)."""

    format: Literal["apisix-kafka-logger"]
    topic: str = Field(min_length=1)
    #: JMESPath expressions into each log entry: the API key (the consumer's name by default),
    #: and the API. An entry without a key counts for its org only.
    key_path: str = "consumer.username"
    api_path: str | None = "route_id"
    #: Where the org comes from: a JMESPath expression, or one org for every entry.
    org_path: str | None = None
    org_id: str | None = Field(default=None, min_length=1)
    #: Response codes that mean a request refused by APISIX before it reached the upstream
    #: (auth plugins, limit-count, limit-req): such an entry, when it shows no upstream, counts
    #: for its org only.
    refused_codes: tuple[int, ...] = (401, 403, 429, 503)

    _paths = field_validator("key_path", "api_path", "org_path")(_check_path)

    @model_validator(mode="after")
    def _one_org(self) -> ApisixSource:
        if (self.org_path is None) == (self.org_id is None):
            raise ValueError("give the org of its entries as org_path or as org_id (one of them)")
        return self


IngestSource = Annotated[TykPumpSource | ApisixSource, Field(discriminator="format")]


class IngestSettings(Section):
    """Gateways' own topics, each re-keyed and pre-aggregated into gateway.requests."""

    sources: tuple[IngestSource, ...] = ()
    #: The relay runs in a process of its own, a child of the worker, with a core to itself;
    #: false runs it on the worker's event loop, beside the other stages.
    own_process: bool = True

    @field_validator("sources")
    @classmethod
    def _distinct_topics(cls, value: tuple[IngestSource, ...]) -> tuple[IngestSource, ...]:
        topics = [source.topic for source in value]
        for topic in topics:
            if topics.count(topic) > 1:
                raise ValueError(f"topic {topic!r} is listed as more than one source")
        return value


class TykSettings(Section):
    """The Tyk Gateway that `quota-pipeline sessions sync` reads key sessions from."""

    #: Its REST API, e.g. http://tyk-gateway:8080.
    gateway_url: str | None = None
    #: tyk.conf's ``secret``, sent as x-tyk-authorization.
    gateway_secret: SecretStr | None = None
    #: Session requests in flight at once.
    concurrency: int = Field(default=32, ge=1, le=1024)
    #: Seconds for one request.
    timeout: float = Field(default=10, gt=0)
    #: The CA that signed the gateway's certificate (PEM); the system's CAs when unset.
    ssl_cafile: FilePath | None = None
    #: The gateway hashes keys (tyk.conf ``hash_keys``): it lists the hashes (only with
    #: ``enable_hashed_keys_listing``), and a hash is fetched with ``?hashed=true``.
    hashed_keys: bool = False

    @field_validator("gateway_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not is_http_url(value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/") if value else value
