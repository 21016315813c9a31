"""The records that cross the pipeline's boundaries: a message read from a topic, a message
to send, a job to run. Plain data, shared by the pipeline, the stores and both runtimes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    topic: str
    offset: int
    key: str | None
    value: Any  # str, bytes, or JSON text
    headers: dict[str, str]
    timestamp: float
    partition: int | None = None  # of a Kafka topic; None for an embedded topic


@dataclass(frozen=True)
class PendingJob:
    instance: str
    node: str
    job: str
    seq: int
    payload: Any


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: str | None
    value: Any
    headers: dict[str, str] = field(default_factory=dict)
