"""The portal agent: portal.events in, the org's webhook and email and the developer's email
out, through the same delivery path (retries, signing, dead letters) as triggers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline.app import Pipeline
from pipeline.delivery import Deliverer
from pipeline.errors import InvalidRecord
from pipeline.metrics import PORTAL_EVENTS
from pipeline.notifications import Notifier
from pipeline.portal import decode_portal_event, position_id
from pipeline.streams import run_bounded, send_rejection

if TYPE_CHECKING:
    # The router lives with the delivery agent, which attaches this one.
    from pipeline.delivery_agent import DeliveryRouter

log = logging.getLogger(__name__)


def attach_portal_agent(
    pipeline: Pipeline, *, notifier: Notifier, deliverer: Deliverer, router: DeliveryRouter
) -> None:
    """Register the agent; it shares the delivery agent's deliverer and router."""

    @pipeline.app.agent(pipeline.topics.portal_events, name="portal")
    async def portal_agent(stream: Any) -> None:
        await deliverer.start()
        manual = stream.noack()

        async def handle(event: Any) -> None:
            message = event.message
            try:
                portal = decode_portal_event(
                    event.value,
                    default_id=position_id(message.topic, message.partition, message.offset),
                )
            except InvalidRecord as exc:
                await send_rejection(pipeline, event, exc.reason)
                PORTAL_EVENTS.labels(outcome="rejected").inc()
            else:
                options = pipeline.tables.org_targets.get(portal.org_id)
                planned = notifier.portal_deliveries(portal, options)
                # No options, or an org not known yet, is nobody to tell: counted, not an error.
                PORTAL_EVENTS.labels(outcome="delivered" if planned else "no_targets").inc()
                await router.dispatch(deliverer, planned)
            await manual.ack(event)

        await run_bounded(manual.events(), pipeline.settings.delivery.concurrency, handle)
