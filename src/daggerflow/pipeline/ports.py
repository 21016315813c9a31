"""The pipeline's boundary with the facade: what a runtime offers (``Runtime``) and what it
is told about the application (``Subscriptions``). Both runtimes implement ``Runtime``; the
facade (``engine.Dagger``) holds one and delegates every instance and topic call to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..machine.events import Event
from ..model.bulk import BulkShare, BulkSpec
from ..model.history import Page
from ..model.instance import Instance
from ..model.query import InstanceQuery
from ..model.records import Message, Outgoing
from ..model.schedule import Schedule
from ..model.workers import OwnerEntry
from ..store.base import Store
from .ingress import AgentSpec
from .items import Settings
from .notify import CommitObserver
from .partition import TaskContext


class Subscriptions(Protocol):
    """The registry as a runtime sees it: which topics to read, and for what."""

    @property
    def listeners(self) -> Mapping[str, list[type]]: ...

    @property
    def agents(self) -> Sequence[AgentSpec]: ...

    def user_topics(self) -> set[str]: ...


@dataclass(frozen=True)
class RuntimeParts:
    """What the facade hands either runtime, besides the runtime's own configuration: the
    processors' settings (ownership left to the runtime), the registry to read, the context
    every partition task shares, and the post-commit observer (waiters, update callbacks)."""

    settings: Settings
    subscriptions: Subscriptions
    context: TaskContext
    observer: CommitObserver


class Runtime(Protocol):
    """One way of running the pipeline: embedded (one partition in SQLite) or on Kafka."""

    @property
    def running(self) -> bool: ...

    async def start(self, web_url: str | None) -> None:
        """Open the state, resume it and start reading. ``web_url``: where this worker's REST
        API answers (the Kafka runtime publishes it with the partitions it owns)."""

    async def stop(self) -> None:
        """Stop reading, drain running jobs (up to the shutdown timeout), commit what is
        queued, close the state."""

    def vital_task(self) -> asyncio.Task[None]:
        """A task whose end (by failing) means this worker no longer works."""

    def subscriptions_changed(self) -> None:
        """The registry got new listeners or agents while running."""

    async def call(self, instance_id: str, event: Event) -> tuple[bool, Instance | None]:
        """Apply ``event`` to an instance: (True, the committed result) where this process
        owns the instance, else (False, None) once it was handed to the owner."""

    def submit_outcome(self, instance_id: str, event: Event, box: list[Outgoing]) -> None:
        """A job's outcome (and what it sent), for the instance's processor."""

    def committed(self, instance_id: str) -> Instance | None:
        """The committed state, if this process holds the instance."""

    def local_instance(self, instance_id: str) -> Instance | None:
        """Like ``committed``, but raises ``NotOwner`` where another worker owns it."""

    async def get_instance(self, instance_id: str) -> Instance | None:
        """The committed state, wherever it is held."""

    def local_history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        """A page of the history of an instance this process holds (None: no such instance);
        ``NotOwner`` where another worker owns it."""

    async def history(self, instance_id: str, *, after: int, size: int) -> Page | None:
        """A page of the history of any instance, wherever it is held."""

    async def wait_for(
        self, instance_id: str, check: Callable[[Instance], bool], timeout: float | None
    ) -> Instance: ...

    def list_local(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        """One page of this process's instances that meet ``query`` (``model.query``), in
        its order; ``status``/``template`` override the query's (``listing_query``)."""
        ...

    def count_local(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int: ...

    async def list_all(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Instance]:
        """Like ``list_local``, across every worker (Kafka: merged in the query's order)."""
        ...

    async def count_all(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
    ) -> int: ...

    def list_schedules_local(self) -> list[Schedule]:
        """The schedules this process holds (every schedule when embedded), by name."""

    async def get_schedule(self, name: str) -> Schedule | None:
        """The schedule called ``name``, wherever it is held (Kafka: from its partition's
        owner; ``ForwardError`` when it does not answer)."""

    async def list_schedules_all(self) -> list[Schedule]:
        """Every schedule, wherever it is held (Kafka: asks the other workers), by name."""

    async def append(self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None) -> int: ...

    async def bulk_start(self, spec: BulkSpec) -> int | None:
        """Start a bulk job on every partition. Embedded: applied on return, with the count
        of its matched instances; Kafka: sent to each partition of the events topic (None)."""

    def bulk_local(self, job: str | None) -> list[BulkShare]:
        """The shares of ``job`` this process holds (None: of every active job)."""
        ...

    async def bulk_all(self, job: str) -> tuple[list[BulkShare], int]:
        """The shares of ``job`` wherever held, and how many partitions there are."""
        ...

    def bulk_jobs_local(self, *, active: bool, limit: int) -> list[BulkShare]:
        """The shares this process holds of the jobs not finished (``active``), or of the
        ``limit`` newest jobs."""
        ...

    async def bulk_jobs_all(self, *, active: bool, limit: int) -> tuple[list[BulkShare], int]:
        """Like ``bulk_jobs_local``, wherever held (Kafka: every worker is asked; one that
        does not answer is skipped), and how many partitions there are."""
        ...

    def read_topic(self, topic: str, start: int, limit: int) -> list[Message]: ...

    async def newest_messages(
        self, topic: str, *, limit: int, partition: int | None, before: int | None
    ) -> list[Message]:
        """The ``limit`` newest messages of ``topic``, newest first (reading, not consuming);
        ``before``: only offsets below it; ``partition``: only that one (Kafka)."""
        ...

    async def message_at(self, topic: str, partition: int | None, offset: int) -> Message | None:
        """The message at ``offset`` (of ``partition`` on Kafka), None if there is none."""

    def count_messages(self, topic: str) -> int | None:
        """How many messages ``topic`` holds, where that is cheap to know (embedded: its
        offsets are dense); None on Kafka, where transaction markers take offsets too."""

    async def unread(self, topic: str, partition: int, offset: int) -> bool | None:
        """Whether a reader of ``topic`` (a listener's or an agent's) has yet to read the
        message at ``offset`` of ``partition``: embedded, this process's consumers; on Kafka,
        the committed offsets of the application's consumer groups. None: not known here."""

    def topic_names(self) -> list[str]: ...

    def running_instances(self) -> Iterator[Instance]:
        """Every instance this process holds that has not ended (a scan: for the operators'
        calls, not the hot path)."""

    def stored_versions(self) -> list[tuple[str, str, bytes, float]]:
        """The template versions this process keeps: (template, version, definition, seen)."""

    def remember_version(self, template: str, version: str, definition: bytes) -> None:
        """Keep a version's definition (embedded: in the store, durably; Kafka: in memory,
        each worker its registered versions, the others derived from running instances)."""

    async def versions_elsewhere(self) -> list[bytes]:
        """The version listings of the other workers (their internal route's answers)."""

    def local_stores(self) -> list[Store]:
        """The stores this process holds now (embedded: its one store; Kafka: one per
        partition it owns): the console's reads (``console_reads``) read them."""
        ...

    async def ask_others(self, path: str, params: Mapping[str, str]) -> list[bytes]:
        """GET internal route ``path`` of every other worker (Kafka), the answers of those
        that answered; embedded: none."""
        ...

    def purge(self) -> None:
        """Forget expired dedupe ids and buffered messages (housekeeping)."""

    def stats(self) -> dict[str, Any]: ...

    @property
    def worker_id(self) -> str:
        """This process's id among the workers: host and process (on Kafka with a random
        suffix, as the owners topic names it)."""

    def partition_owners(self) -> list[OwnerEntry] | None:
        """Kafka: each partition's owner as the owners topic says; None embedded."""

    def consumer_lag(self) -> dict[str, int]:
        """Messages this process's readers of each topic have yet to read (the slowest
        reader's count where several read one topic)."""
