"""pipeline.engine.web: what a page answers when the broker does not take a record."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError

from pipeline.engine.web import publish_failure


def test_a_record_too_large_for_the_broker_is_the_clients_413():
    assert publish_failure(MessageSizeTooLargeError()).status == 413
    # faust wraps what aiokafka refuses before sending.
    wrapped = ProducerSendError("Error while sending")
    wrapped.__cause__ = MessageSizeTooLargeError()
    assert publish_failure(wrapped).status == 413


@pytest.mark.parametrize("exc", [KafkaTimeoutError(), TimeoutError(), ProducerSendError("x")])
def test_other_publish_failures_ask_for_a_retry(exc):
    failure = publish_failure(exc)
    assert failure.status == 503
    assert "retry" in failure.reason
