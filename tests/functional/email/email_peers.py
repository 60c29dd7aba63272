"""Local stand-ins for the email providers' HTTP APIs, served by a WebhookReceiver.

Each peer checks a request the way its provider documents the API (path, credentials, body
shape) and answers the provider's documented error when a check fails; otherwise it answers the
next response a test scripted, or the provider's documented success.
"""

from __future__ import annotations

import base64
import os
import re
from abc import ABC, abstractmethod
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import orjson
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from pipeline.devtools.receiver import ReceivedWebhook


def json_response(status: int, body: Any, **headers: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def json_of(received: ReceivedWebhook) -> Any:
    try:
        return orjson.loads(received.body)
    except orjson.JSONDecodeError:
        return None


class ProviderPeer(ABC):
    """A WebhookReceiver responder playing one provider; ``calls`` holds the requests that
    passed its checks, ``script`` the answers to give next instead of success."""

    def __init__(self) -> None:
        self.calls: list[ReceivedWebhook] = []
        self.script: list[web.Response] = []

    def __call__(self, received: ReceivedWebhook) -> web.Response:
        refusal = self.check(received, CIMultiDict(received.headers))
        if refusal is not None:
            return refusal
        self.calls.append(received)
        return self.script.pop(0) if self.script else self.success(received)

    @abstractmethod
    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        """The provider's error answer for a request it would refuse; None if it is fine."""

    @abstractmethod
    def success(self, received: ReceivedWebhook) -> web.Response:
        """The provider's answer to an accepted message."""


class SendGridPeer(ProviderPeer):
    """POST /v3/mail/send, ``Authorization: Bearer <key>``, JSON; 202 with X-Message-Id."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    @staticmethod
    def error(status: int, message: str, field: str | None = None) -> web.Response:
        return json_response(
            status, {"errors": [{"message": message, "field": field, "help": None}]}
        )

    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        if (received.method, received.path) != ("POST", "/v3/mail/send"):
            return self.error(404, "not found")
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        body = json_of(received)
        if not isinstance(body, dict) or not headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            return self.error(400, "Bad Request", "body")
        try:
            recipient = body["personalizations"][0]["to"][0]["email"]
            sender = body["from"]["email"]
            types = [part["type"] for part in body["content"]]
        except (KeyError, IndexError, TypeError):
            return self.error(400, "The personalizations, from and content fields are required")
        if not recipient or not sender or not body.get("subject"):
            return self.error(400, "The subject is required", "subject")
        if types[0] != "text/plain":
            return self.error(400, "text/plain must come first", "content")
        return None

    def success(self, received: ReceivedWebhook) -> web.Response:
        return web.Response(status=202, headers={"X-Message-Id": "sg-message-1"})


class MailgunPeer(ProviderPeer):
    """POST /v3/{domain}/messages, Basic auth ``api:<key>``, a form; 200 ``{id, message}``."""

    def __init__(self, domain: str, api_key: str) -> None:
        super().__init__()
        self.domain = domain
        self.api_key = api_key

    def form(self, received: ReceivedWebhook) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(received.body.decode()).items()}

    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        if (received.method, received.path) != ("POST", f"/v3/{self.domain}/messages"):
            return json_response(404, {"message": "Domain not found"})
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            return web.Response(status=401, text="Forbidden")
        if headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return json_response(400, {"message": "unsupported content type"})
        form = self.form(received)
        for field in ("from", "to", "subject"):
            if not form.get(field):
                return json_response(400, {"message": f"'{field}' parameter is missing"})
        if not (form.get("text") or form.get("html")):
            return json_response(400, {"message": "Need at least one of 'text' or 'html'"})
        return None

    def success(self, received: ReceivedWebhook) -> web.Response:
        return json_response(200, {"id": f"<mg-1@{self.domain}>", "message": "Queued. Thank you."})


class MandrillPeer(ProviderPeer):
    """POST /api/1.0/messages/send.json with the key in the body; 200, a result per recipient."""

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key

    @staticmethod
    def error(name: str, message: str) -> web.Response:
        # Mandrill answers its errors with 500, whatever their cause.
        body = {"status": "error", "code": -1 if name == "Invalid_Key" else -2, "name": name}
        return json_response(500, {**body, "message": message})

    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        if (received.method, received.path) != ("POST", "/api/1.0/messages/send.json"):
            return web.Response(status=404)
        body = json_of(received)
        if not isinstance(body, dict) or body.get("key") != self.api_key:
            return self.error("Invalid_Key", "Invalid API key")
        message = body.get("message")
        if not isinstance(message, dict) or not message.get("to"):
            return self.error("ValidationError", "You must specify a message value")
        if not message.get("from_email") or not (message.get("html") or message.get("text")):
            return self.error("ValidationError", "from_email and html or text are required")
        return None

    def success(self, received: ReceivedWebhook) -> web.Response:
        recipient = json_of(received)["message"]["to"][0]["email"]
        return json_response(
            200, [{"email": recipient, "status": "sent", "_id": "md-1", "reject_reason": None}]
        )


class SesPeer(ProviderPeer):
    """SES v2 SendEmail: POST /v2/email/outbound-emails, SigV4 (service "ses"); 200 MessageId.

    The signature is recomputed with botocore from what arrived (method, URL from the Host
    header, the signed headers, the body, the request's own X-Amz-Date) and must be equal.
    Temporary credentials also need their session token in X-Amz-Security-Token.
    """

    def __init__(
        self,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
    ) -> None:
        super().__init__()
        self.region = region
        self.credentials = Credentials(access_key_id, secret_access_key)
        self.session_token = session_token

    @staticmethod
    def error(status: int, kind: str, message: str) -> web.Response:
        return json_response(status, {"message": message}, **{"x-amzn-ErrorType": kind})

    def expected_authorization(
        self, received: ReceivedWebhook, headers: CIMultiDict[str]
    ) -> str | None:
        signed = re.search(r"SignedHeaders=([^,]+)", headers.get("Authorization", ""))
        if signed is None or "X-Amz-Date" not in headers:
            return None
        names = [name for name in signed.group(1).split(";") if name != "host"]
        request = AWSRequest(
            method=received.method,
            url=f"http://{headers['Host']}{received.path}",
            data=received.body,
            headers={name: headers[name] for name in names if name in headers},
        )
        request.context["timestamp"] = headers["X-Amz-Date"]
        signer = SigV4Auth(self.credentials, "ses", self.region)
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        signed_names = signer.signed_headers(signer.headers_to_sign(request))
        return (
            f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )

    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        if (received.method, received.path) != ("POST", "/v2/email/outbound-emails"):
            return self.error(404, "NotFoundException", "Resource not found")
        if headers.get("X-Amz-Security-Token") != self.session_token:
            return self.error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        expected = self.expected_authorization(received, headers)
        if expected is None or headers.get("Authorization") != expected:
            return self.error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        body = json_of(received)
        try:
            raw = base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)
            recipients = body["Destination"]["ToAddresses"]
        except (KeyError, TypeError, ValueError):
            return self.error(400, "BadRequestException", "Content.Raw.Data is required")
        if not raw or not recipients:
            return self.error(400, "BadRequestException", "Raw message and recipients required")
        return None

    def success(self, received: ReceivedWebhook) -> web.Response:
        return json_response(200, {"MessageId": "ses-message-1"})

    @staticmethod
    def raw_message(received: ReceivedWebhook) -> EmailMessage:
        """The MIME message a call carried, parsed as a receiver would."""
        raw = base64.b64decode(json_of(received)["Content"]["Raw"]["Data"])
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class StsPeer(ProviderPeer):
    """STS AssumeRoleWithWebIdentity (query protocol: a form POST, unsigned): the role and the
    token it expects, answered with the documented XML holding temporary credentials."""

    NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"

    def __init__(
        self,
        *,
        role_arn: str,
        token: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str,
        expiration: datetime,
    ) -> None:
        super().__init__()
        self.role_arn = role_arn
        self.token = token
        self.issued = (access_key_id, secret_access_key, session_token)
        self.expiration = expiration

    @classmethod
    def error(cls, status: int, code: str, message: str) -> web.Response:
        kind = "Sender" if status < 500 else "Receiver"
        body = (
            f'<ErrorResponse xmlns="{cls.NAMESPACE}"><Error><Type>{kind}</Type>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
            "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
        )
        return web.Response(status=status, text=body, content_type="text/xml")

    @staticmethod
    def form(received: ReceivedWebhook) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(received.body.decode()).items()}

    def check(self, received: ReceivedWebhook, headers: CIMultiDict[str]) -> web.Response | None:
        form = self.form(received)
        if received.method != "POST" or form.get("Action") != "AssumeRoleWithWebIdentity":
            return self.error(400, "InvalidAction", "Could not find operation")
        if form.get("Version") != "2011-06-15" or not form.get("RoleSessionName"):
            return self.error(400, "ValidationError", "Version and RoleSessionName are required")
        if form.get("WebIdentityToken") != self.token:
            return self.error(400, "InvalidIdentityToken", "The ID token is not valid.")
        if form.get("RoleArn") != self.role_arn:
            return self.error(
                403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
            )
        return None

    def success(self, received: ReceivedWebhook) -> web.Response:
        key, secret, session_token = self.issued
        expiration = self.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
        session = self.form(received)["RoleSessionName"]
        assumed = f"arn:aws:sts::123456789012:assumed-role/{self.role_arn.rsplit('/', 1)[-1]}"
        body = f"""<AssumeRoleWithWebIdentityResponse xmlns="{self.NAMESPACE}">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:quota:pipeline</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>{escape(assumed)}/{escape(session)}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{escape(session)}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{escape(session_token)}</SessionToken>
      <SecretAccessKey>{escape(secret)}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{escape(key)}</AccessKeyId>
    </Credentials>
    <Provider>oidc.eks.eu-west-1.amazonaws.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
        return web.Response(status=200, text=body, content_type="text/xml")


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS_* variable from the developer's shell, no ~/.aws files, no instance metadata:
    botocore's chain sees only what a test gives it, never real credentials."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
