"""The portal agent: portal.events in, the org's webhook and email and the developer's email
out, through the same delivery path (retries, signing, dead letters) as triggers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pipeline.delivery.deliverer import Deliverer
from pipeline.delivery.planning import Notifier, option
from pipeline.delivery.router import DeliveryRouter
from pipeline.engine import EventStream, log_failure
from pipeline.engine.acks import OrderedAcks
from pipeline.errors import InvalidRecord, failure_reason
from pipeline.portal.digests import DigestItem, DigestWindows, Window
from pipeline.portal.events import PortalEvent, decode_portal_event, position_id
from pipeline.service.metrics import PORTAL_EVENTS
from pipeline.wiring import Pipeline

log = logging.getLogger(__name__)


def attach_portal_agent(
    pipeline: Pipeline, *, notifier: Notifier, deliverer: Deliverer, router: DeliveryRouter
) -> None:
    """Register the agent (and the digest agent when digests are on); they share the delivery
    agent's deliverer and router."""
    interval = pipeline.settings.email_backend.key_request_digest
    digesting = notifier.email is not None and interval > 0
    digest_topic = pipeline.topics.digest

    async def digest_item(portal: PortalEvent, options: Any) -> bool:
        """Queue the org's email of a key request for its digest; True when queued."""
        to = option(options, portal.option, "email")
        if not (digesting and portal.option == "key_request_event" and to):
            return False
        item = DigestItem(to, portal.org_id, portal.delivered_payload(), time.time())
        # Durable before the event is acknowledged, like every other delivery.
        await (await digest_topic.send(to.encode(), item.to_json()))
        return True

    async def first() -> None:
        await deliverer.start()
        await pipeline.org_directory.ready.wait()  # every org known at start-up, first

    async def handle(event: Any) -> None:
        message = event.message
        try:
            portal = decode_portal_event(
                event.value,
                default_id=position_id(message.topic, message.partition, message.offset),
            )
        except InvalidRecord as exc:
            await pipeline.reject(event, exc.reason)
            PORTAL_EVENTS.labels(outcome="rejected").inc()
        else:
            options = pipeline.org_directory.get(portal.org_id)
            digested = await digest_item(portal, options)
            planned = notifier.portal_deliveries(portal, options, org_email=not digested)
            # No options, or an org not known yet, is nobody to tell: counted, not an error.
            told = planned or digested
            PORTAL_EVENTS.labels(outcome="delivered" if told else "no_targets").inc()
            await router.dispatch(deliverer, planned)

    pipeline.engine.concurrent_agent(
        pipeline.topics.portal_events,
        handle,
        name="portal",
        limit=pipeline.settings.delivery.events_in_flight,
        reject=pipeline.reject,
        before=first,
    )
    if digesting:
        attach_digest_agent(
            pipeline, interval, notifier=notifier, deliverer=deliverer, router=router
        )


def attach_digest_agent(
    pipeline: Pipeline,
    interval: float,
    *,
    notifier: Notifier,
    deliverer: Deliverer,
    router: DeliveryRouter,
) -> None:
    """Gathers digest items per address and sends each window as one email when it closes;
    its items are acknowledged only then."""

    async def digests(stream: EventStream) -> None:
        await deliverer.start()
        # Windows of different addresses close out of order: acknowledge in partition order.
        acks = OrderedAcks(stream.ack)
        windows = DigestWindows(interval)
        opened = asyncio.Event()

        async def send_closed() -> None:
            while True:
                closes = windows.next_close()
                timeout = None if closes is None else max(0.0, closes - time.time())
                # Wakes when a window closes, or when a new one opens (it may close sooner).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(opened.wait(), timeout)
                opened.clear()
                for window in windows.closed(time.time()):
                    try:
                        await send(window)
                    except Exception as exc:  # a bad item must not hold the others back
                        await reject_all(window, exc)

        async def send(window: Window) -> None:
            requests = [item.request for item in window.items]
            assert notifier.email is not None  # digests are on only with email on
            await router.dispatch(
                deliverer, [notifier.email.digest(window.to, window.org_id, requests)]
            )
            for event in window.receipts:
                await acks.finished(event)

        async def reject_all(window: Window, exc: Exception) -> None:
            """A digest that failed to build or route: its items go to pipeline.rejected."""
            log_failure(window.receipts[0], exc)
            try:
                for event in window.receipts:
                    await pipeline.reject(event, failure_reason(exc))
                    await acks.finished(event)
            except Exception:  # the broker is gone: unacknowledged, read again after a restart
                log.error("a failed digest could not be rejected; kept for a restart")

        sender = asyncio.create_task(send_closed())
        try:
            async for event in stream.events():
                acks.arrived(event)
                try:
                    item = DigestItem.from_json(event.value)
                except InvalidRecord as exc:
                    await pipeline.reject(event, exc.reason)
                    await acks.finished(event)
                    continue
                windows.add(item, event)
                opened.set()
        finally:
            sender.cancel()

    pipeline.engine.stream_agent(pipeline.topics.digest, digests, name="digest")
