"""pipeline.engine.clients.patiently: admin requests asked again while the cluster heals (a
node down), one line when it does not heal or refuses outright."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    NodeNotReadyError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from pipeline.config import Settings
from pipeline.devtools.local import free_port
from pipeline.engine import clients
from pipeline.errors import BrokerUnavailable


def settings() -> Settings:
    return Settings.model_validate({"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}})


def failing(*errors: Exception, then: object = "answer"):
    """An ask that raises each of ``errors`` in turn, then returns ``then``; counts its calls."""
    calls: list[int] = []

    async def ask() -> object:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return then

    ask.calls = calls  # type: ignore[attr-defined]
    return ask


async def test_a_node_down_is_asked_again_until_another_answers() -> None:
    ask = failing(NodeNotReadyError("node 1"), NodeNotReadyError("node 1"), then=["topic"])
    assert await clients.patiently(settings(), ask) == ["topic"]
    assert len(ask.calls) == 3


async def test_a_refusal_is_one_line_at_once() -> None:
    ask = failing(TopicAuthorizationFailedError("denied"))
    with pytest.raises(BrokerUnavailable, match="Kafka refused the request: TopicAuthorization"):
        await clients.patiently(settings(), ask)
    assert len(ask.calls) == 1


async def test_the_brokers_answer_is_raised_as_it_is() -> None:
    ask = failing(TopicAlreadyExistsError("exists"))
    with pytest.raises(TopicAlreadyExistsError):
        await clients.patiently(settings(), ask, answers=(TopicAlreadyExistsError,))


async def test_a_cluster_that_does_not_heal_in_time_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clients, "ADMIN_PATIENCE", 0.0)
    ask = failing(*[NodeNotReadyError("node 1")] * 5)
    with pytest.raises(BrokerUnavailable, match=r"no Kafka broker at 127\.0\.0\.1:"):
        await clients.patiently(settings(), ask)
    assert len(ask.calls) == 1
