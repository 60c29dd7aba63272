"""pipeline.webhooks.signing and .requests: Standard Webhooks signatures and request headers.

Signatures are checked with the reference ``standardwebhooks`` library, as a receiver would.
It rejects timestamps more than five minutes from its clock, so signed timestamps are "now".
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping, Sequence

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pipeline import __version__
from pipeline.webhooks.requests import (
    WebhookRequest,
    attempt_headers,
    default_trigger_body,
    secrets_for,
)
from pipeline.webhooks.signing import secret_bytes, sign, signature_header

BODY = b'{"event":"TriggerExceeded","key":"abc123","trigger_limit":"80"}'
EVENT_ID = "evt_0123456789abcdef0123456789abcdef"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


def now() -> int:
    return int(time.time())


def signed_headers(
    secrets: Sequence[str], *, msg_id: str = EVENT_ID, timestamp: int | None = None
) -> dict[str, str]:
    timestamp = now() if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, BODY),
    }


def webhook_request(
    *,
    event_id: str = EVENT_ID,
    body: bytes = BODY,
    extra_headers: Mapping[str, str] | None = None,
) -> WebhookRequest:
    return WebhookRequest(
        event_id=event_id,
        method="POST",
        url="https://hooks.example.com/quota",
        body=body,
        extra_headers=extra_headers or {},
    )


# --- signatures --------------------------------------------------------------------------------


def test_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()

    payload = Webhook(secret).verify(BODY, signed_headers([secret]))

    assert payload == json.loads(BODY)


def test_signature_has_the_v1_form() -> None:
    value = sign(new_secret(), EVENT_ID, now(), BODY)

    version, signature = value.split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature, validate=True)) == 32


def test_rotation_verifies_with_either_secret_alone() -> None:
    current, previous = new_secret(), new_secret()
    headers = signed_headers([current, previous])

    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["webhook-signature"].split(" ")[0] == sign(
        current, EVENT_ID, int(headers["webhook-timestamp"]), BODY
    )
    Webhook(current).verify(BODY, headers)
    Webhook(previous).verify(BODY, headers)


def test_other_secret_fails() -> None:
    headers = signed_headers([new_secret()])

    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_changed_body_fails() -> None:
    secret = new_secret()
    headers = signed_headers([secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b'"80"', b'"60"'), headers)


def test_changed_id_fails() -> None:
    secret = new_secret()
    headers = {**signed_headers([secret]), "webhook-id": "evt_someone_else"}

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_changed_timestamp_fails() -> None:
    secret = new_secret()
    headers = signed_headers([secret])
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_secret_without_prefix_signs_the_same() -> None:
    secret = new_secret()

    assert sign(secret, EVENT_ID, 1, BODY) == sign(secret.removeprefix("whsec_"), EVENT_ID, 1, BODY)


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_abc"])
def test_bad_secret_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_ followed by base64"):
        secret_bytes(secret)


# --- attempt headers ---------------------------------------------------------------------------


def test_attempt_headers_without_secrets() -> None:
    headers = attempt_headers(
        webhook_request(extra_headers={"X-Env": "test", "Authorization": "Bearer t"}),
        now=1764331999.9,
        signing_secrets=[],
    )

    assert headers == {
        "X-Env": "test",
        "Authorization": "Bearer t",
        "Content-Type": "application/json",
        "User-Agent": f"quota-pipeline/{__version__}",
        "webhook-id": EVENT_ID,
        "webhook-timestamp": "1764331999",
    }
    assert "webhook-signature" not in headers


def test_webhook_id_is_the_event_id_on_every_attempt() -> None:
    request = webhook_request(event_id="evt_retry_me")

    first = attempt_headers(request, now=1000.0, signing_secrets=[])
    retry = attempt_headers(request, now=1300.5, signing_secrets=[])

    assert first["webhook-id"] == retry["webhook-id"] == "evt_retry_me"
    assert (first["webhook-timestamp"], retry["webhook-timestamp"]) == ("1000", "1300")


def test_config_headers_cannot_override_ours() -> None:
    request = webhook_request(
        extra_headers={
            "webhook-id": "evt_forged",
            "webhook-timestamp": "1",
            "Content-Type": "text/plain",
            "User-Agent": "curl/8",
        }
    )

    headers = attempt_headers(request, now=1764331999.0, signing_secrets=[])

    assert headers["webhook-id"] == EVENT_ID
    assert headers["webhook-timestamp"] == "1764331999"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"quota-pipeline/{__version__}"


def test_config_headers_cannot_override_ours_in_other_case() -> None:
    request = webhook_request(extra_headers={"Webhook-Id": "evt_forged"})

    headers = attempt_headers(request, now=1764331999.0, signing_secrets=[])

    assert [value for name, value in headers.items() if name.lower() == "webhook-id"] == [EVENT_ID]


def test_signed_attempt_verifies() -> None:
    current, previous = new_secret(), new_secret()
    request = webhook_request(extra_headers={"X-Env": "test"})

    headers = attempt_headers(request, now=time.time(), signing_secrets=[current, previous])

    assert headers["webhook-id"] == EVENT_ID
    assert headers["X-Env"] == "test"
    Webhook(current).verify(request.body, headers)
    Webhook(previous).verify(request.body, headers)


def test_signed_attempt_does_not_verify_for_another_body() -> None:
    secret = new_secret()
    request = webhook_request()

    headers = attempt_headers(request, now=time.time(), signing_secrets=[secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"event":"TriggerExceeded"}', headers)


def test_attempt_headers_do_not_change_the_request() -> None:
    extra = {"X-Env": "test"}
    request = webhook_request(extra_headers=extra)

    attempt_headers(request, now=1.0, signing_secrets=[new_secret()])

    assert extra == {"X-Env": "test"}


# --- default body ------------------------------------------------------------------------------


def test_default_trigger_body_is_tyks_five_fields_plus_usage_percentage() -> None:
    event = {
        "event": "TriggerExceeded",
        "message": "Quota trigger reached",
        "org": "org1",
        "key": "abc123",
        "trigger_limit": "80",
        "id": "evt_x",
        "subject": "key",
        "usage": 800,
        "quota_max": 1000,
        "usage_percentage": 80,
        "period_start": 1764331200.25,
        "period_end": 1764334800.25,
        "ts": 1764331999.0,
    }

    body = json.loads(default_trigger_body(event))

    assert body == {
        "event": "TriggerExceeded",
        "message": "Quota trigger reached",
        "org": "org1",
        "key": "abc123",
        "trigger_limit": "80",
        "usage_percentage": 80,
    }
    assert list(body) == [
        "event",
        "message",
        "org",
        "key",
        "trigger_limit",
        "usage_percentage",
    ]


def test_a_target_takes_the_secrets_of_its_longest_matching_prefix() -> None:
    default, team, acme = ["whsec_ZGVm"], ["whsec_dGVhbQ=="], ["whsec_YWNtZQ=="]
    per_target = {"https://hooks.example.com/": team, "https://hooks.example.com/acme/": acme}

    assert secrets_for("https://hooks.example.com/acme/q", default, per_target) == acme
    assert secrets_for("https://hooks.example.com/beta/q", default, per_target) == team
    assert secrets_for("https://other.example.com/q", default, per_target) == default
    assert secrets_for("https://hooks.example.com/acme/q", default, {}) == default
