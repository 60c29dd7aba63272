"""The exception tree of quota-pipeline.

    PipelineError                  root; never raised itself
    ├── ConfigError                bad config file or environment value (exit status 2)
    ├── UsageError                 a person gave the command line something unusable (exit 2)
    ├── BrokerUnavailable          Kafka cannot be reached, or refuses what we ask (exit 2)
    ├── GatewayUnavailable         a gateway's API cannot be read: unreachable, refuses our
    │                              secret, or answers what we cannot use (exit 2)
    ├── InvalidRecord              one input record breaks the contract: goes to pipeline.rejected
    └── DeliveryError              a webhook or email attempt failed
        ├── RetriableDeliveryError     worth another attempt later (retry_after may say when)
        └── PermanentDeliveryError     will fail the same way again: dead-letter it
            └── TargetRefused          the SSRF guard refuses the target (pipeline.webhooks.ssrf)

Third-party errors are translated into these at one boundary each, ``raise ... from exc``.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error quota-pipeline raises on purpose."""

    retriable: bool = False


class ConfigError(PipelineError):
    """The config file or a QP_ environment variable is unusable."""


class UsageError(PipelineError):
    """A command-line argument or input file is unusable."""


class BrokerUnavailable(PipelineError):
    """No Kafka broker answered at the configured bootstrap servers."""


class GatewayUnavailable(PipelineError):
    """A gateway's own API (Tyk's, for `sessions sync`) cannot be read: it does not answer,
    refuses our secret, or answers something that is not its API."""


class InvalidRecord(PipelineError):
    """An input record breaks the contract; ``reason`` is what goes to pipeline.rejected."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(PipelineError):
    """One delivery attempt failed.

    ``status`` is the HTTP (or SMTP) status when the peer answered, None otherwise.
    """

    #: Whether the failure says something of the endpoint's health (counts towards its
    #: circuit breaker). A target our own policy refuses was never contacted.
    endpoint_failed: bool = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetriableDeliveryError(DeliveryError):
    """A transient failure: network, timeout, 408, 429, 5xx, SMTP 4xx."""

    retriable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """A failure that repeats on retry: other 4xx, SMTP 5xx, refused target, bad payload."""


def failure_reason(exc: BaseException) -> str:
    """Why a record could not be processed, for pipeline.rejected: a contract breach says
    what is wrong; anything else is named with its type (a bug of ours, or bad stored state)."""
    if isinstance(exc, InvalidRecord):
        return exc.reason
    detail = str(exc)
    if len(detail) > 200:
        detail = detail[:200] + "…"
    return f"could not be processed: {type(exc).__name__}" + (f": {detail}" if detail else "")
