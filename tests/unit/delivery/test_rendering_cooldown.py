"""Body templates (template_path) and Tyk's webhook cooldown (event_timeout)."""

from __future__ import annotations

import orjson
import pytest

from pipeline.delivery.cooldown import PRUNE_ABOVE, Cooldown
from pipeline.errors import ConfigError, PermanentDeliveryError
from pipeline.webhooks.bodies import BodyTemplate

EVENT = {"event": "TriggerExceeded", "org": "org1", "key": 'k"1', "trigger_limit": "80"}


def test_template_renders_event_fields_and_the_whole_payload(tmp_path):
    path = tmp_path / "body.json"
    path.write_text('{"text": "{{ org }} at {{ trigger_limit }}%", "all": {{ payload | tojson }}}')
    body = orjson.loads(BodyTemplate.load(path).render(EVENT))
    assert body == {"text": "org1 at 80%", "all": EVENT}


def test_tojson_keeps_hostile_values_valid_json():
    body = BodyTemplate('{"key": {{ key | tojson }}}', "inline").render(EVENT)
    assert orjson.loads(body) == {"key": 'k"1'}


def test_template_errors_are_config_errors_at_load(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{{ org ")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        BodyTemplate.load(path)
    with pytest.raises(ConfigError, match="cannot read template"):
        BodyTemplate.load(tmp_path / "missing.json")


def test_unknown_variable_is_a_permanent_delivery_error():
    with pytest.raises(PermanentDeliveryError, match="undefined"):
        BodyTemplate("{{ no_such_field }}", "inline").render(EVENT)


def test_cooldown_suppresses_identical_requests_within_the_timeout():
    cooldown = Cooldown(10)
    assert cooldown.admit("POST", "http://h/x", b"{}", now=100)
    assert not cooldown.admit("POST", "http://h/x", b"{}", now=109.9)
    assert cooldown.admit("POST", "http://h/x", b"{ }", now=105)  # another body
    assert cooldown.admit("POST", "http://h/y", b"{}", now=105)  # another target
    assert cooldown.admit("POST", "http://h/x", b"{}", now=110)


def test_zero_cooldown_never_suppresses():
    cooldown = Cooldown(0)
    assert all(cooldown.admit("POST", "http://h/x", b"{}", now=1) for _ in range(3))


def test_cooldown_keeps_every_live_entry_and_forgets_cooled_ones_past_the_bound():
    cooldown = Cooldown(10)
    many = PRUNE_ABOVE * 3
    # More requests still cooling down than the bound: each is remembered...
    assert all(cooldown.admit("POST", "http://h/x", b"%d" % i, now=100) for i in range(many))
    assert not any(cooldown.admit("POST", "http://h/x", b"%d" % i, now=105) for i in range(many))
    # ...and once they have cooled down, the next prune forgets them all.
    assert all(cooldown.admit("POST", "http://h/y", b"%d" % i, now=200) for i in range(many))
    assert len(cooldown._until) <= many + 1
