"""Amazon SES v2 SendEmail: POST /v2/email/outbound-emails with the raw MIME message, signed with
botocore's SigV4 signer (service "ses"); 200 ``{"MessageId"}`` when accepted.

The keys are the configured ones or, when none are, what botocore's credential chain finds
(pipeline.email.aws); temporary ones add their session token (X-Amz-Security-Token).

Errors name their type in the ``x-amzn-ErrorType`` header ("MessageRejected:http://...") and
explain it in a JSON body (``message``).
"""

from __future__ import annotations

import base64
import re

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from pipeline.delivery.outcomes import parse_retry_after
from pipeline.email.aws import AwsCredentials
from pipeline.email.http_provider import (
    HttpEmailSink,
    ProviderAnswer,
    ProviderCall,
    excerpt,
    json_body,
)
from pipeline.email.message import EmailRequest, addresses, build_message
from pipeline.errors import DeliveryError, RetriableDeliveryError

SERVICE = "ses"
SEND_PATH = "/v2/email/outbound-emails"
#: Throttling that older endpoints answer with 400 rather than 429.
RETRIABLE_ERRORS = frozenset({"TooManyRequestsException", "ThrottlingException"})
ACCOUNT_ERRORS = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "AccessDeniedException",
    }
)
_REGIONAL_HOST = re.compile(r"email(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


def default_base_url(region: str) -> str:
    return f"https://email.{region}.amazonaws.com"


def endpoint_url(endpoint: str) -> str:
    """Tyk's ``Endpoint`` setting as a base URL: a bare host means https."""
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def region_of(endpoint: str) -> str | None:
    """The region an SES endpoint's host names, if it is one of AWS's regional hosts."""
    host = endpoint_url(endpoint).split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    match = _REGIONAL_HOST.fullmatch(host)
    return match.group(1) if match else None


def error_type(answer: ProviderAnswer) -> str:
    """The short error type: "MessageRejected" of "MessageRejected:http://internal..."."""
    return answer.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]


class SesSink(HttpEmailSink):
    """``access_key_id`` and ``secret_access_key`` are the configured keys; with neither, the
    sink signs with botocore's credential chain. ``credentials`` replaces both (tests)."""

    code = "amazonses"

    def __init__(
        self,
        *,
        region: str,
        access_key_id: str = "",
        secret_access_key: str = "",
        credentials: AwsCredentials | None = None,
        base_url: str | None = None,
        timeout: float,
    ) -> None:
        super().__init__(base_url=base_url or default_base_url(region), timeout=timeout)
        if bool(access_key_id) != bool(secret_access_key):
            raise ValueError("SesSink needs both keys, or neither to use the credential chain")
        if credentials is None:
            credentials = (
                AwsCredentials.fixed(Credentials(access_key_id, secret_access_key), name=self.code)
                if access_key_id
                else AwsCredentials.chain(name=self.code)
            )
        self._credentials = credentials
        self._region = region

    async def start(self) -> None:
        await super().start()
        await self._credentials.start()

    async def stop(self) -> None:
        await self._credentials.stop()
        await super().stop()

    async def send(self, request: EmailRequest) -> None:
        if self._session is not None:  # else super() says send before start() is a bug
            # Finding or refreshing credentials may take a thread; prepare() then signs with
            # what this made sure of (nothing awaits in between).
            await self._credentials.current()
        await super().send(request)

    def prepare(self, request: EmailRequest) -> ProviderCall:
        sender, recipient = addresses(request)
        raw = build_message(request).as_bytes()
        body = orjson.dumps(
            {
                "FromEmailAddress": sender.addr_spec,
                "Destination": {"ToAddresses": [recipient.addr_spec]},
                "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
            }
        )
        url = self.base_url + SEND_PATH
        headers = self._signed_headers(url, body, self._credentials.latest)
        return ProviderCall(url=url, headers=headers, body=body)

    def _signed_headers(
        self, url: str, body: bytes, credentials: ReadOnlyCredentials
    ) -> dict[str, str]:
        """Content-Type, X-Amz-Date, Authorization (and X-Amz-Security-Token with temporary
        credentials) for this body, signed now."""
        signed = AWSRequest(
            method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
        )
        # A signer per request is three attribute stores; the cost is the HMACs, as before.
        SigV4Auth(credentials, SERVICE, self._region).add_auth(signed)
        return {name: str(value) for name, value in signed.headers.items()}

    def error_detail(self, answer: ProviderAnswer) -> str:
        value = json_body(answer.body)
        message = ""
        if isinstance(value, dict):
            message = str(value.get("message") or value.get("Message") or "")
        kind = error_type(answer)
        return excerpt(": ".join(part for part in (kind, message) if part) or "no error body")

    def outcome(self, answer: ProviderAnswer, *, now: float) -> DeliveryError | None:
        error = super().outcome(answer, now=now)
        if error is not None and error_type(answer) in RETRIABLE_ERRORS:
            retry_after = parse_retry_after(answer.headers.get("Retry-After"), now=now)
            return RetriableDeliveryError(str(error), status=answer.status, retry_after=retry_after)
        return error

    def account_problem(self, answer: ProviderAnswer) -> bool:
        return super().account_problem(answer) or error_type(answer) in ACCOUNT_ERRORS
