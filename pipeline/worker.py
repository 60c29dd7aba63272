"""`quota-pipeline worker`: one process of the pipeline's consumer group."""

from __future__ import annotations

import asyncio
import logging

import faust

from pipeline.app import Pipeline, build_pipeline
from pipeline.config import Settings
from pipeline.delivery_agent import attach_delivery_agent
from pipeline.kafka import probe_broker
from pipeline.org_agent import attach_org_agents
from pipeline.usage_agent import attach_usage_agents
from pipeline.web import attach_web

log = logging.getLogger(__name__)


def build_worker_pipeline(settings: Settings) -> Pipeline:
    """The App with every agent and page a worker runs."""
    pipeline = build_pipeline(settings)
    attach_usage_agents(pipeline)
    attach_org_agents(pipeline)
    attach_delivery_agent(pipeline)
    attach_web(pipeline)
    return pipeline


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run until SIGTERM or Ctrl-C. An unreachable broker raises BrokerUnavailable first."""
    # The probe reports an unreachable broker in our one line; faust's logging takes over after.
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(probe_broker(settings))
    finally:
        aiokafka_log.setLevel(logging.NOTSET)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipeline = build_worker_pipeline(settings)
    worker = faust.Worker(pipeline.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
