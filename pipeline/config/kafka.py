"""The ``kafka`` section: where the cluster is, how our topics are made, and how every client
connects to it (TLS, SASL)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, model_validator

from pipeline.config.base import Section


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    #: Partitions of the topics `topics create` makes (and of faust's internal topics).
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    #: at_least_once (default): a crash may count the records since the last commit again.
    #: exactly_once (see pipeline/engine/transactions.py): table changes, emitted events and
    #: source offsets commit in one Kafka transaction per source partition.
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "at_least_once"
    #: Seconds between commits (transactions): bounds how long a consumer waits for a trigger.
    commit_interval: float = Field(default=0.5, gt=0)
    #: Workers that keep a warm copy of each table partition besides its owner (faust's
    #: table_standby_replicas). 0, as in Kafka Streams: a standby reads every changelog record
    #: of the partitions it backs, one by one through faust's per-record path, in the same loop
    #: that fetches the requests; with 2 workers that held p99 latency at several seconds. A
    #: partition that moves is then recovered from its changelog (or from the tail only, when
    #: the worker held it before and kept its data dir).
    standby_replicas: int = Field(default=0, ge=0)
    #: The most a fetch returns of one partition (Kafka's max.partition.fetch.bytes; faust's
    #: consumer_max_fetch_size defaults to 1 MiB). A worker reading a backlog of
    #: gateway.requests waited for fetches 40% of the time with 1 MiB (about 9,500 records a
    #: partition per round trip): one worker read 65,000 records/s, 105,000 with 4 MiB.
    max_partition_fetch_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: How every client connects (see docs/operations.md, "Connecting to a managed Kafka").
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: The CA that signed the brokers' certificates (PEM); the system's CAs when unset.
    ssl_cafile: FilePath | None = None
    #: This client's certificate and key (PEM), for brokers that require mutual TLS.
    ssl_certfile: FilePath | None = None
    ssl_keyfile: FilePath | None = None
    ssl_check_hostname: bool = True

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _security_is_whole(self) -> KafkaSettings:
        """Settings that would be silently ignored, or a half-given identity, are errors: a
        client that connects without the TLS or the user its operator meant is worse than none."""
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if not self.uses_sasl and (self.sasl_username or self.sasl_password):
            raise ValueError(
                f"sasl_username and sasl_password need security_protocol SASL_PLAINTEXT or "
                f"SASL_SSL, not {self.security_protocol}"
            )
        tls_files = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if getattr(self, name) is not None
        ]
        if tls_files and not self.uses_tls:
            raise ValueError(
                f"{', '.join(tls_files)} need security_protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        return self

    def connection(self) -> dict[str, Any]:
        """How to reach and authenticate to the cluster, and the replicas it wants of a topic
        (a managed cluster may refuse fewer than 3), secrets revealed, as a config file holds
        them: for the processes the bench starts."""
        section = self.model_dump(
            mode="json",
            include={
                "bootstrap_servers",
                "replication_factor",
                "security_protocol",
                "sasl_mechanism",
                "sasl_username",
                "ssl_cafile",
                "ssl_certfile",
                "ssl_keyfile",
                "ssl_check_hostname",
            },
            exclude_none=True,
        )
        if self.sasl_password is not None:
            section["sasl_password"] = self.sasl_password.get_secret_value()
        return section
