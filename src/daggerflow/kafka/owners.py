"""Who owns which partition: the ``{app}-owners`` topic and a process-local view of it.

Every task, when its partition becomes active, writes one record to the compacted, single
partition ``{app}-owners`` topic from its transactional producer: key = the partition number
in ASCII decimal, value = JSON ``{"partition", "url", "worker", "since"}``. Compaction keeps the
latest record per partition, so reading the topic from the beginning gives the current owner of
every partition that was ever active; a later record for a partition replaces the earlier one.

``OwnersView`` reads it without a consumer group (every process needs all of it, and a group
would split it), ``read_committed`` so that a record written by a zombie whose transaction was
aborted is never seen. Any process uses it to find the REST URL of an instance's owner and
forward reads there (``daggerflow.kafka.remote``), and the standby logic watches it.

Only ``OwnersView`` needs aiokafka (the ``kafka`` extra); it is imported when the view starts,
so that the record helpers can be used, and this module imported, without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from .client_options import Connection

log = logging.getLogger(__name__)

OwnersCallback = Callable[[dict[int, "Owner"]], None]


@dataclass(frozen=True)
class Owner:
    """The worker that activated ``partition`` last, and where its REST API answers (None: off)."""

    partition: int
    url: str | None
    worker: str
    since: float


def owner_record(owner: Owner) -> tuple[bytes, bytes]:
    """The (key, value) of ``owner``'s record on the owners topic."""
    value = {"partition": owner.partition, "url": owner.url, "worker": owner.worker, "since": owner.since}
    return str(owner.partition).encode(), json.dumps(value, separators=(",", ":")).encode()


def parse_owner(key: bytes | None, value: bytes | None) -> Owner | None:
    """The owner a record names; None for a tombstone or a record that is not an owner record.

    Never raises: the topic is shared by every worker of the application, and one bad record
    (another version, a hand-written test record) must not stop the view. Garbage is logged.
    """
    if value is None:
        return None
    try:
        return _parse(key, value)
    except (ValueError, TypeError, RecursionError) as exc:
        log.warning(
            "ignoring a malformed record on the owners topic (key %r, value %.200r): %s", key, value, exc
        )
        return None


def _parse(key: bytes | None, value: bytes) -> Owner:
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError("the value is not a JSON object")
    partition, url, worker, since = (data.get(k) for k in ("partition", "url", "worker", "since"))
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ValueError(f"partition must be a non-negative integer, not {partition!r}")
    if key is None or key.decode("ascii") != str(partition):
        raise ValueError(f"the key {key!r} does not name partition {partition}")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"url must be a string or null, not {url!r}")
    if not isinstance(worker, str):
        raise ValueError(f"worker must be a string, not {worker!r}")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or not math.isfinite(since):
        raise ValueError(f"since must be a number, not {since!r}")
    return Owner(partition, url, worker, float(since))


def _tombstone_partition(key: bytes | None) -> int | None:
    try:
        return int(key.decode("ascii")) if key is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


class OwnersView:
    """The latest owner record of every partition, kept up to date by tailing the owners topic."""

    def __init__(self, broker: Connection | str, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self._owners: dict[int, Owner] = {}
        self._callbacks: list[OwnersCallback] = []
        # Replaced after each change, so a waiter wakes up once per change and re-checks.
        self._changed = asyncio.Event()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, timeout: float = 30.0) -> None:
        """Read the topic up to the end offsets it has now, then keep tailing it in the background.

        Raises ``ConfigurationError`` if the topic does not exist after ``timeout`` seconds (the
        admin step creates it; subscribing to a missing topic would auto-create a wrong one).
        """
        from aiokafka import TopicPartition

        from .compat import consumer_client
        from .settings import groupless_consumer

        consumer = groupless_consumer(
            self.broker,
            fetch_max_wait_ms=200,
            auto_offset_reset="earliest",  # compaction may remove the offset we stand on
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                # The metadata of all topics: asking for a named topic would auto-create it.
                # (consumer.topics() fetches the same but returns only the names.)
                cluster = await consumer_client(consumer).fetch_all_metadata()
                partitions = cluster.partitions_for_topic(self.topic)
                if partitions:
                    break
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"Kafka topic {self.topic!r} does not exist (after {timeout:.0f} s)"
                    )
                await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # Under read_committed these are the last stable offsets: an open transaction's
            # records are not waited for here, the tail applies them once committed.
            ends = await consumer.end_offsets(tps)
            async with asyncio.timeout(timeout):
                while not all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self._apply(await consumer.getmany(timeout_ms=200))
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        log.info("owners view of %s caught up: %d partitions have an owner", self.topic, len(self._owners))
        self._notify()
        self._task = asyncio.create_task(self._tail(), name=f"daggerflow-owners-{self.topic}")

    async def stop(self) -> None:
        from .background import stop_tail

        task, self._task = self._task, None
        consumer, self._consumer = self._consumer, None
        await stop_tail(task, consumer)

    def owner(self, partition: int) -> Owner | None:
        return self._owners.get(partition)

    def owners(self) -> dict[int, Owner]:
        return dict(self._owners)

    def urls(self) -> list[str]:
        """The distinct REST URLs of the current owners, sorted."""
        return sorted({o.url for o in self._owners.values() if o.url is not None})

    async def wait_owner(self, partition: int, timeout: float, *, other_than: Owner | None = None) -> Owner:
        """The owner of ``partition`` once there is one (and it is not ``other_than``, e.g. an
        owner that did not answer). Raises ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                found = self._owners.get(partition)
                if found is not None and found != other_than:
                    return found
                await self._changed.wait()

    def on_change(self, callback: OwnersCallback) -> None:
        """Call ``callback(owners)`` after each batch of records that changed the view (and once
        when ``start`` has caught up). Exceptions it raises are logged, never propagated."""
        self._callbacks.append(callback)

    async def _tail(self) -> None:
        from aiokafka.errors import KafkaError

        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                # The consumer reconnects by itself (broker restart); keep the last known owners.
                log.warning("owners view of %s: %s; retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                # A view that stopped silently would forward to stale owners for ever.
                log.exception("owners view of %s failed to fetch; retrying", self.topic)
                await asyncio.sleep(1.0)
                continue
            if self._apply(batch):
                self._notify()

    def _apply(self, batch: dict[Any, list[Any]]) -> bool:
        """Apply fetched records in offset order; True if the view changed."""
        changed = False
        for records in batch.values():
            for record in records:
                owner = parse_owner(record.key, record.value)
                if owner is not None:
                    if self._owners.get(owner.partition) != owner:
                        self._owners[owner.partition] = owner
                        changed = True
                elif record.value is None:
                    # A tombstone: nobody is recorded as owning that partition any more.
                    partition = _tombstone_partition(record.key)
                    if partition is not None and self._owners.pop(partition, None) is not None:
                        changed = True
        return changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        snapshot = dict(self._owners)
        for callback in self._callbacks:
            try:
                callback(snapshot)
            except Exception:
                log.exception("owners view callback %r failed", callback)
