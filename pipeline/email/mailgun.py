"""Mailgun's Messages API: POST /v3/{domain}/messages as a form, Basic auth api:<key>, 200."""

from __future__ import annotations

import base64
from urllib.parse import quote, urlencode

from pipeline.email.http_provider import (
    HttpEmailSink,
    ProviderAnswer,
    ProviderCall,
    excerpt,
    json_body,
)
from pipeline.email.message import EVENT_ID_HEADER, EmailRequest, addresses, message_id

#: The US region; EU domains use https://api.eu.mailgun.net (set it in base_urls).
DEFAULT_BASE_URL = "https://api.mailgun.net"


class MailgunSink(HttpEmailSink):
    code = "mailgun"

    def __init__(
        self, *, domain: str, api_key: str, base_url: str = DEFAULT_BASE_URL, timeout: float
    ) -> None:
        super().__init__(base_url=base_url, timeout=timeout)
        self._domain = domain
        # RFC 7617 Basic; aiohttp's BasicAuth is deprecated and its successor is 3.14+ only.
        credentials = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"

    def prepare(self, request: EmailRequest) -> ProviderCall:
        sender, recipient = addresses(request)
        fields = [
            ("from", str(sender)),
            ("to", str(recipient)),
            ("subject", request.subject),
            ("text", request.text),
            ("html", request.html),
            # "h:" fields become headers of the sent message.
            (f"h:{EVENT_ID_HEADER}", request.event_id),
            ("h:Message-Id", message_id(request)),
        ]
        return ProviderCall(
            url=f"{self.base_url}/v3/{quote(self._domain, safe='')}/messages",
            headers={
                "Authorization": self._authorization,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            body=urlencode(fields).encode(),
        )

    def error_detail(self, answer: ProviderAnswer) -> str:
        """Mailgun's ``{"message": ...}``; some errors (401) are plain text."""
        value = json_body(answer.body)
        if isinstance(value, dict) and "message" in value:
            return excerpt(str(value["message"]))
        return excerpt(answer.body.decode(errors="replace"))
