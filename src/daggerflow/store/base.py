"""The store interface: small and transactional (design §6).

Every change a batch of events makes (instances, correlation index, timers, pending jobs,
outgoing messages, consumer positions, dedupe ids, buffered messages) goes into one
``WriteBatch`` and is committed atomically by ``Store.commit``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..model.bulk import BulkShare
from ..model.instance import Correlation, Instance
from ..model.query import InstanceQuery
from ..model.records import Message, Outgoing, PendingJob
from ..model.schedule import Schedule

__all__ = ["Message", "Outgoing", "PendingJob", "Store", "WriteBatch"]


@dataclass
class WriteBatch:
    instances: dict[str, Instance | None] = field(default_factory=dict)
    # The processor's encoding of each instance in ``instances`` (stores use it if present).
    encoded: dict[str, bytes] = field(default_factory=dict)
    # (correlation, instance, node, the node's listener is match_only_one)
    index_put: list[tuple[Correlation, str, str, bool]] = field(default_factory=list)
    index_del: list[tuple[Correlation, str, str]] = field(default_factory=list)
    timers_set: dict[tuple[str, str], float] = field(default_factory=dict)
    timers_del: set[tuple[str, str]] = field(default_factory=set)
    jobs_put: list[PendingJob] = field(default_factory=list)
    jobs_del: list[tuple[str, str, int]] = field(default_factory=list)
    appends: list[Outgoing] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    buffer_put: list[tuple[Correlation, Any, float]] = field(default_factory=list)
    buffer_del: list[int] = field(default_factory=list)
    # The id of each ``buffer_put`` entry, in order: left empty by the processor and filled
    # in by ``commit`` with the ids it assigned; given by a changelog restore (an entry with
    # a given id replaces any entry that has that id).
    buffer_ids: list[int] = field(default_factory=list)
    # Dedupe ids with their own first-seen time (a changelog restore); ``seen`` uses ``ts``.
    seen_at: dict[tuple[str, str], float] = field(default_factory=dict)
    # Dedupe ids to forget (expired: a purge that goes through the changelog).
    seen_del: list[tuple[str, str]] = field(default_factory=list)
    # Schedules written (None: deleted), by name: a schedule's state changes in the batch
    # that creates the instances of its ticks.
    schedules: dict[str, Schedule | None] = field(default_factory=dict)
    # History rows (``model.history``): (instance, first seq, msgpack array of entries), and
    # the (instance, first seq) of rows to delete.
    history_put: list[tuple[str, int, bytes]] = field(default_factory=list)
    history_del: list[tuple[str, int]] = field(default_factory=list)
    # The search index (``model.query.search_rows``), written only where an instance's
    # searchable parameters changed: (instance, name, value, created) rows to put (replacing
    # the instance's row of that name), (instance, name) rows to delete, and the (template,
    # search keys) of instances created, which tell the store which templates index a name.
    search_put: list[tuple[str, str, str, float]] = field(default_factory=list)
    search_del: list[tuple[str, str]] = field(default_factory=list)
    search_profiles: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    # Changelog partition -> offset of the last changelog record this batch applies.
    changelog_offsets: dict[int, int] = field(default_factory=dict)
    # Kafka runtime only (stores ignore these): input partition -> next offset to read, and
    # what goes to other partitions' owners: ``pipeline.items.Forward`` records (typed there:
    # the store sits below the pipeline and never reads them).
    input_offsets: dict[Any, int] = field(default_factory=dict)
    forwards: list[Any] = field(default_factory=list)
    # Bulk jobs (``model.bulk``): this partition's share of each job changed (job id ->
    # share), the ids a share starts with ((job, seq, instance)), and those acted on
    # ((job, seq)), deleted in the commit that records the action.
    bulk_shares: dict[str, BulkShare] = field(default_factory=dict)
    bulk_items_put: list[tuple[str, int, str]] = field(default_factory=list)
    bulk_items_del: list[tuple[str, int]] = field(default_factory=list)

    def set_timer(self, instance: str, key: str, due: float) -> None:
        self.timers_del.discard((instance, key))
        self.timers_set[(instance, key)] = due

    def cancel_timer(self, instance: str, key: str) -> None:
        self.timers_set.pop((instance, key), None)
        self.timers_del.add((instance, key))


class Store(Protocol):
    """What the engine needs of a store (SQLite, or RocksDB with the ``rocksdb`` extra).

    One process owns a store at a time: stores may cache topic heads in memory."""

    path: str
    # Whether the correlation index holds exactly the waiting listeners of this store's own
    # instances (a search by waiting listener uses it), as a store of every partition does.
    local_correlations: bool

    def get_instance(self, instance_id: str) -> Instance | None: ...

    def list_instances(
        self, *, status: str | None, template: str | None, limit: int, offset: int
    ) -> list[Instance]: ...

    def count_instances(self, *, status: str | None, template: str | None) -> int: ...

    def query_instances(self, query: InstanceQuery, *, limit: int, offset: int) -> list[Instance]:
        """One page of the instances that meet ``query`` (``model.query.matches``), in its order."""
        ...

    def count_query(self, query: InstanceQuery) -> int:
        """How many instances meet ``query``."""
        ...

    def lookup(self, at: Correlation) -> list[tuple[str, str, bool]]:
        """The (instance, node, match_only_one) entries indexed under ``at``."""
        ...

    def history_rows(self, instance_id: str) -> list[tuple[int, bytes]]:
        """The stored history rows of an instance: (first seq, msgpack array of entries)."""
        ...

    def all_timers(self) -> list[tuple[str, str, float]]: ...

    def status_counts(self) -> list[tuple[str, str, int]]:
        """(template, status, how many instances), from the instances' columns or index records
        (no instance is decoded)."""
        ...

    def waiting_instances(self) -> Iterator[Instance]:
        """Every instance that has an open listener or a pending timer, and perhaps others
        (the console's listings filter them)."""
        ...

    def bulk_share(self, job: str) -> BulkShare | None:
        """This store's share of bulk job ``job``, if it has one."""
        ...

    def bulk_active(self) -> list[BulkShare]:
        """The shares of bulk jobs not finished yet, oldest first."""
        ...

    def bulk_recent(self, limit: int) -> list[BulkShare]:
        """The shares of the ``limit`` newest bulk jobs, finished or not, newest first."""
        ...

    def bulk_items(self, job: str, limit: int) -> list[tuple[int, str]]:
        """The next ``limit`` (seq, instance id) a share has yet to act on, in order."""
    def get_schedule(self, name: str) -> Schedule | None: ...

    def list_schedules(self) -> list[Schedule]:
        """Every schedule the store holds, by name."""
        ...

    def pending_jobs(self) -> list[PendingJob]: ...

    def buffered(self, at: Correlation, now: float) -> list[tuple[int, Any]]: ...

    def has_seen(self, topic: str, message_id: str) -> bool: ...

    def position(self, consumer: str) -> int | None: ...

    def changelog_checkpoint(self, partition: int) -> int | None:
        """The offset of the last changelog record of ``partition`` applied to this store
        (``WriteBatch.changelog_offsets``), or None."""
        ...

    def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None, ts: float
    ) -> int: ...

    def read(self, topic: str, start: int, limit: int) -> list[Message]: ...

    def end_offset(self, topic: str) -> int: ...

    def topics(self) -> list[str]: ...

    def commit(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        """Write the whole batch atomically and durably; return the (topic, offset) of
        each message it appended, in order. Fills ``batch.buffer_ids`` if it was empty."""
        ...

    def save_template_version(self, template: str, version: str, definition: bytes, ts: float) -> None:
        """Keep a template version's definition, unless one is kept already (not part of a
        batch: the catalogue of versions is the embedded runtime's, never changelogged)."""
        ...

    def template_versions(self) -> list[tuple[str, str, bytes, float]]:
        """Every kept (template, version, definition, first seen), oldest first."""
        ...

    def expired(self, now: float, seen_ttl: float, limit: int) -> tuple[list[tuple[str, str]], list[int]]:
        """What has expired, at most ``limit`` of each: dedupe ids (topic, id) first seen
        before ``now - seen_ttl``, and buffered messages due by ``now``. A purge deletes them
        with a batch (``seen_del``, ``buffer_del``), so that a changelog gets the tombstones."""
        ...

    def close(self) -> None: ...
