"""The engine: everything that touches faust, mode and aiokafka, behind a few typed objects.

No module outside this package imports faust, mode or aiokafka (a test holds the rest of the
package to that). The stages build on these names:

    Engine          the faust App: topics, tables, feeds; agents, tasks, pages (engine.app)
    Topic, Table    handles on a topic and a changelogged table
    BulkFeed        the records of a topic read in bulk, a fetch at a time (engine.feeds)
    SourceEvent     stands in for the record a batch acts on behalf of
    Batch           runs of records taken from a feed under one epoch
    EventStream     a faust stream's events, acknowledged by the agent
    CatchUp         one agent held back until another has read its topic (engine.catchup)
    TP              a topic partition
    Reject          what a failed handler does with its event
"""

from __future__ import annotations

from faust.types import TP

from pipeline.engine.app import Engine, EventStream, Table, Topic
from pipeline.engine.catchup import CatchUp
from pipeline.engine.feeds import Batch, BulkFeed, SourceEvent
from pipeline.engine.runs import Reject, log_failure

__all__ = [
    "TP",
    "Batch",
    "BulkFeed",
    "CatchUp",
    "Engine",
    "EventStream",
    "Reject",
    "SourceEvent",
    "Table",
    "Topic",
    "log_failure",
]
