"""What every part of a worker shares: its configuration and identity, the topics, the
record collector that every commit goes through, the supervisor of its loops and the
encoder of forwards to other partitions' owners."""

from __future__ import annotations

from dataclasses import dataclass

from .admin import InternalTopics
from .collector import RecordCollector
from .config import KafkaConfig
from .records import ForwardEncoder
from .supervisor import Supervisor


@dataclass(frozen=True)
class WorkerContext:
    config: KafkaConfig
    topics: InternalTopics
    owners_topic: str
    worker_id: str
    collector: RecordCollector
    supervisor: Supervisor
    forwards: ForwardEncoder
