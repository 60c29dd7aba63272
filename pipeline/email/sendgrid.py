"""SendGrid's v3 Mail Send API: POST /v3/mail/send, Bearer API key, 202 when accepted."""

from __future__ import annotations

import orjson

from pipeline.email.http_provider import (
    HttpEmailSink,
    ProviderAnswer,
    ProviderCall,
    excerpt,
    json_body,
)
from pipeline.email.message import EVENT_ID_HEADER, EmailRequest, addresses

DEFAULT_BASE_URL = "https://api.sendgrid.com"


class SendGridSink(HttpEmailSink):
    code = "sendgrid"

    def __init__(self, *, api_key: str, base_url: str = DEFAULT_BASE_URL, timeout: float) -> None:
        super().__init__(base_url=base_url, timeout=timeout)
        self._api_key = api_key

    def prepare(self, request: EmailRequest) -> ProviderCall:
        sender, recipient = addresses(request)
        from_field = {"email": sender.addr_spec}
        if sender.display_name:
            from_field["name"] = sender.display_name
        body = {
            "personalizations": [{"to": [{"email": recipient.addr_spec}]}],
            "from": from_field,
            "subject": request.subject,
            # SendGrid requires text/plain first when both are given.
            "content": [
                {"type": "text/plain", "value": request.text},
                {"type": "text/html", "value": request.html},
            ],
            "headers": {EVENT_ID_HEADER: request.event_id},
        }
        return ProviderCall(
            url=f"{self.base_url}/v3/mail/send",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
            },
            body=orjson.dumps(body),
        )

    def error_detail(self, answer: ProviderAnswer) -> str:
        """SendGrid's ``{"errors": [{"message", "field", ...}]}``."""
        value = json_body(answer.body)
        errors = value.get("errors") if isinstance(value, dict) else None
        if isinstance(errors, list) and errors:
            return excerpt("; ".join(_describe(error) for error in errors))
        return excerpt(answer.body.decode(errors="replace"))


def _describe(error: object) -> str:
    if not isinstance(error, dict):
        return str(error)
    field, message = error.get("field"), error.get("message")
    return f"{field}: {message}" if field else str(message)
