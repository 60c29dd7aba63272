"""Mandrill's messages/send: POST /api/1.0/messages/send.json, the key in the JSON body.

Mandrill answers 200 with one result per recipient, whose ``status`` says whether the message
was taken ("sent", "queued", "scheduled") or not ("rejected", "invalid"); its errors come as
``{"status": "error", "name": ..., "message": ...}``, usually with HTTP 500 whatever the cause,
so the name, not the status, says whether to retry.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.email.http_provider import (
    HttpEmailSink,
    ProviderAnswer,
    ProviderCall,
    excerpt,
    json_body,
)
from pipeline.email.message import EVENT_ID_HEADER, EmailRequest, addresses
from pipeline.errors import DeliveryError, PermanentDeliveryError

DEFAULT_BASE_URL = "https://mandrillapp.com"

ACCEPTED = frozenset({"sent", "queued", "scheduled"})
#: Errors that repeat on retry; the others (GeneralError, ...) may pass.
PERMANENT_ERRORS = frozenset(
    {"Invalid_Key", "ValidationError", "PaymentRequired", "Unknown_Subaccount"}
)
ACCOUNT_ERRORS = frozenset({"Invalid_Key", "PaymentRequired"})


def _error(value: Any) -> tuple[str, str] | None:
    """(name, message) of a Mandrill error body, if it is one."""
    if isinstance(value, dict) and value.get("status") == "error":
        return str(value.get("name")), str(value.get("message"))
    return None


class MandrillSink(HttpEmailSink):
    code = "mandrill"

    def __init__(self, *, api_key: str, base_url: str = DEFAULT_BASE_URL, timeout: float) -> None:
        super().__init__(base_url=base_url, timeout=timeout)
        self._api_key = api_key

    def prepare(self, request: EmailRequest) -> ProviderCall:
        sender, recipient = addresses(request)
        message = {
            "subject": request.subject,
            "text": request.text,
            "html": request.html,
            "from_email": sender.addr_spec,
            "from_name": sender.display_name,
            "to": [{"email": recipient.addr_spec, "type": "to"}],
            "headers": {EVENT_ID_HEADER: request.event_id},
        }
        return ProviderCall(
            url=f"{self.base_url}/api/1.0/messages/send.json",
            headers={"Content-Type": "application/json"},
            body=orjson.dumps({"key": self._api_key, "message": message}),
        )

    def error_detail(self, answer: ProviderAnswer) -> str:
        error = _error(json_body(answer.body))
        if error is not None:
            return excerpt(f"{error[0]}: {error[1]}")
        return excerpt(answer.body.decode(errors="replace"))

    def outcome(self, answer: ProviderAnswer, *, now: float) -> DeliveryError | None:
        value = json_body(answer.body)
        if 200 <= answer.status < 300:
            return self._recipient_outcome(value, answer.status)
        error = _error(value)
        if error is not None and error[0] in PERMANENT_ERRORS:
            return PermanentDeliveryError(
                f"mandrill answered {answer.status}: {self.error_detail(answer)}",
                status=answer.status,
            )
        return super().outcome(answer, now=now)

    def _recipient_outcome(self, value: Any, status: int) -> DeliveryError | None:
        results = value if isinstance(value, list) else []
        result = results[0] if results and isinstance(results[0], dict) else {}
        verdict = result.get("status")
        if verdict in ACCEPTED:
            return None
        if verdict in {"rejected", "invalid"}:
            reason = result.get("reject_reason") or verdict
            message = f"mandrill {verdict} the recipient: {reason}"
        else:
            # Sent or not, we cannot tell: another attempt could send it twice, so do not retry.
            message = f"mandrill answered {status} without a recipient status"
        return PermanentDeliveryError(message, status=status)

    def account_problem(self, answer: ProviderAnswer) -> bool:
        error = _error(json_body(answer.body))
        return super().account_problem(answer) or (error is not None and error[0] in ACCOUNT_ERRORS)
