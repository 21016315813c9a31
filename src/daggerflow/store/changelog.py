"""The changelog of a partition's local store (Kafka runtime, issue #3; not wired in yet).

A committed ``WriteBatch`` maps to **per-key records** ``(key, value)``; ``value`` None is a
tombstone. Every row of every table the processor writes has its own key, so a compacted
topic keeps exactly the latest state of each row, and reading it in order rebuilds the
store. Messages appended to topics (``WriteBatch.appends``) are not part of the changelog:
in the Kafka runtime topics are Kafka topics.

Keys use the RocksDB store's encoding (``store/keys.py``): a one-byte table tag, then the
row's fields, escaped, so keys of different tables or rows never collide. The tags are the
letters of the RocksDB store's primary ranges:

===  ==================================  ===========================================
tag  key fields                          value (msgpack array, FORMAT_VERSION first)
===  ==================================  ===========================================
i    instance id                         [v, encoded Instance (bytes)]
x    topic, key, value, instance, node   [v] or [v, true]     (a correlation entry;
                                                              true: match_only_one)
T    instance, timer key                 [v, due]
j    instance, node, seq (u64)           [v, job, payload]    (a pending job)
p    consumer                            [v, offset]          (a consumer position)
n    topic, message id                   [v, first seen]      (a dedupe id)
e    buffered message id (u64)           [v, topic, key, value, payload, expires]
a    instance, parameter name            [v, value, created]  (a search row)
a    "", template, search keys (JSON)    [v]                  (a search profile)
u    bulk job id                         [v, encoded BulkShare]  (a partition's share)
U    bulk job id, seq (u64)              [v, instance id]     (one it has yet to act on)
S    schedule name                       [v, encoded Schedule (bytes)]
h    instance, first seq (u64)           [v, msgpack array of history entries]
===  ==================================  ===========================================

Search rows are changelogged rather than rebuilt from the instances on restore: they are
written only when an instance's searchable parameters change (about one record per
instance), while a rebuild would decode every restored instance again.

The records of one batch follow the stores' semantics for the batch: per table, deletes
are applied before puts, so a key both deleted and put in one batch is a put. A deleted
instance is a tombstone of its ``i`` key; the machine also ends its correlation entries and
timers explicitly (an ended instance has none), and a store that applies the tombstone
drops whatever is left, as a normal commit does.

``Restorer`` applies records to any ``Store`` through ``Store.commit``: it folds records
into ``WriteBatch``es, so a store rebuilds its derived data (SQLite's status column,
RocksDB's listing and reverse indexes) exactly as it does for the processor's own commits.
Each restore commit records the offset of its last record
(``WriteBatch.changelog_offsets``), in the same transaction; ``Store.changelog_checkpoint``
reads it back, and a restore resumes after it.

Not covered yet: ``Store.purge`` (expired buffered messages and dedupe ids) writes no
``WriteBatch``, so it produces no tombstones; a restored store holds those rows until its
own next purge drops them again (purge is a function of the time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..errors import ChangelogError
from ..model.bulk import decode_share, encode_share
from ..model.instance import Correlation, decode_instance, encode_instance
from ..model.schedule import decode_schedule, encode_schedule
from .base import PendingJob, Store, WriteBatch
from .keys import U64, text_field, text_fields, u64

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

INSTANCE = b"i"
INDEX = b"x"
TIMER = b"T"
JOB = b"j"
POSITION = b"p"
SEEN = b"n"
BUFFERED = b"e"
SEARCH = b"a"
_PROFILE = SEARCH + text_field("")  # (instance ids are never empty)
BULK_SHARE = b"u"
BULK_ITEM = b"U"
SCHEDULE = b"S"
HISTORY = b"h"

Record = tuple[bytes, bytes | None]

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()
_INDEX_MARK = _pack.encode((FORMAT_VERSION,))
# A match_only_one entry appends its flag; every other entry keeps the one-field value that
# records written before the flag existed have (they read as not match_only_one).
_INDEX_ONLY_ONE = _pack.encode((FORMAT_VERSION, True))


# Batch -> records -------------------------------------------------------------------------------


def batch_records(batch: WriteBatch, ts: float) -> list[Record]:
    """The changelog records of a committed batch, one per changed row, in a fixed order.

    ``ts`` is the time the batch was committed with (the first-seen time of its dedupe
    ids). Call it after ``Store.commit``: the ids of new buffered messages are assigned by
    the commit (``batch.buffer_ids``)."""
    if len(batch.buffer_ids) != len(batch.buffer_put):
        raise ValueError("batch_records needs the committed batch: buffer_ids are assigned by Store.commit")
    out: list[Record] = []
    for iid, inst in batch.instances.items():
        if inst is None:
            out.append((INSTANCE + text_field(iid), None))
        else:
            data = batch.encoded.get(iid) or encode_instance(inst)
            out.append((INSTANCE + text_field(iid), _pack.encode((FORMAT_VERSION, data))))
    index: dict[bytes, bytes | None] = {}
    for c, instance, node in batch.index_del:
        index[index_key(c, instance, node)] = None
    for c, instance, node, only_one in batch.index_put:
        index[index_key(c, instance, node)] = _INDEX_ONLY_ONE if only_one else _INDEX_MARK
    out.extend(index.items())
    timers: dict[bytes, bytes | None] = {}
    for instance, timer in batch.timers_del:
        timers[TIMER + text_field(instance) + text_field(timer)] = None
    for (instance, timer), due in batch.timers_set.items():
        timers[TIMER + text_field(instance) + text_field(timer)] = _pack.encode((FORMAT_VERSION, due))
    # Sorted: ``timers_del`` is a set, and records must not depend on its iteration order.
    out.extend(sorted(timers.items()))
    jobs: dict[bytes, bytes | None] = {}
    for instance, node, seq in batch.jobs_del:
        jobs[JOB + text_field(instance) + text_field(node) + u64(seq)] = None
    for job in batch.jobs_put:
        jobs[JOB + text_field(job.instance) + text_field(job.node) + u64(job.seq)] = _pack.encode(
            (FORMAT_VERSION, job.job, job.payload)
        )
    out.extend(jobs.items())
    for consumer, offset in batch.positions.items():
        out.append((POSITION + text_field(consumer), _pack.encode((FORMAT_VERSION, offset))))
    seen: dict[bytes, bytes | None] = {}
    for topic, message_id in batch.seen_del:
        seen[SEEN + text_field(topic) + text_field(message_id)] = None
    for topic, message_id in batch.seen:
        seen[SEEN + text_field(topic) + text_field(message_id)] = _pack.encode((FORMAT_VERSION, ts))
    for (topic, message_id), first in batch.seen_at.items():
        seen[SEEN + text_field(topic) + text_field(message_id)] = _pack.encode((FORMAT_VERSION, first))
    out.extend(seen.items())
    buffered: dict[bytes, bytes | None] = {}
    for buf_id in batch.buffer_del:
        buffered[BUFFERED + u64(buf_id)] = None
    for buf_id, (c, payload, expires) in zip(batch.buffer_ids, batch.buffer_put, strict=True):
        buffered[BUFFERED + u64(buf_id)] = _pack.encode(
            (FORMAT_VERSION, c.topic, c.key, c.value, payload, expires)
        )
    out.extend(buffered.items())
    rows: dict[bytes, bytes | None] = {}
    for instance, first in batch.history_del:
        rows[HISTORY + text_field(instance) + u64(first)] = None
    for instance, first, data in batch.history_put:
        rows[HISTORY + text_field(instance) + u64(first)] = _pack.encode((FORMAT_VERSION, data))
    out.extend(rows.items())
    for name, schedule in batch.schedules.items():
        value = None if schedule is None else _pack.encode((FORMAT_VERSION, encode_schedule(schedule)))
        out.append((SCHEDULE + text_field(name), value))
    if batch.search_put or batch.search_del or batch.search_profiles:
        out.extend(_search_records(batch))
    if batch.bulk_shares or batch.bulk_items_put or batch.bulk_items_del:
        out.extend(_bulk_records(batch))
    return out


def _bulk_records(batch: WriteBatch) -> list[Record]:
    items: dict[bytes, bytes | None] = {}
    for job, seq in batch.bulk_items_del:
        items[BULK_ITEM + text_field(job) + u64(seq)] = None
    for job, seq, instance in batch.bulk_items_put:
        items[BULK_ITEM + text_field(job) + u64(seq)] = _pack.encode((FORMAT_VERSION, instance))
    out: list[Record] = list(items.items())
    for job, share in batch.bulk_shares.items():
        out.append((BULK_SHARE + text_field(job), _pack.encode((FORMAT_VERSION, encode_share(share)))))
    return out


def _search_records(batch: WriteBatch) -> list[Record]:
    rows: dict[bytes, bytes | None] = {}
    for instance, name in batch.search_del:
        rows[SEARCH + text_field(instance) + text_field(name)] = None
    for instance, name, value, created in batch.search_put:
        rows[SEARCH + text_field(instance) + text_field(name)] = _pack.encode((FORMAT_VERSION, value, created))
    for template, keys in dict.fromkeys(batch.search_profiles):
        key = _PROFILE + text_field(template) + text_field(msgspec.json.encode(list(keys)).decode())
        rows[key] = _INDEX_MARK
    return list(rows.items())


def index_key(c: Correlation, instance: str, node: str) -> bytes:
    return (
        INDEX
        + text_field(c.topic)
        + text_field(c.key)
        + text_field(c.value)
        + text_field(instance)
        + text_field(node)
    )


# Records -> batch -------------------------------------------------------------------------------


def _fields(value: bytes, size: int, optional: int = 0) -> list[Any]:
    """The fields of a record value: ``size`` of them, of which the last ``optional`` were
    appended later (absent from older records: None)."""
    try:
        fields = _unpack.decode(value)
    except msgspec.DecodeError as exc:
        raise ChangelogError(f"changelog value is not msgpack: {exc}") from None
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], int):
        raise ChangelogError(f"changelog value {value[:40]!r} has no format version")
    if fields[0] > FORMAT_VERSION:
        raise ChangelogError(
            f"changelog record format {fields[0]} is newer than this daggerflow supports "
            f"({FORMAT_VERSION}); upgrade daggerflow"
        )
    if not size - optional <= len(fields) <= size:
        expected = f"{size - optional} to {size}" if optional else f"{size}"
        raise ChangelogError(f"changelog value {value[:40]!r}: expected {expected} fields, got {len(fields)}")
    return fields + [None] * (size - len(fields))


def records_batch(records: Iterable[Record]) -> WriteBatch:
    """One ``WriteBatch`` that leaves a store as applying ``records`` in order would: the
    last record of each key wins (each key is either put or deleted)."""
    final: dict[bytes, bytes | None] = {}
    for key, value in records:
        final.pop(key, None)  # keep the order of last writes
        final[key] = value
    batch = WriteBatch()
    for key, value in final.items():
        try:
            _add(batch, key, value)
        except (ValueError, IndexError, TypeError, UnicodeDecodeError, msgspec.DecodeError) as exc:
            raise ChangelogError(f"unreadable changelog key {key[:60]!r}: {exc}") from None
    return batch


def _add(batch: WriteBatch, key: bytes, value: bytes | None) -> None:
    tag = key[:1]
    if tag == INSTANCE:
        (iid,) = text_fields(key[1:])
        if value is None:
            batch.instances[iid] = None
        else:
            data = _fields(value, 2)[1]
            batch.instances[iid] = decode_instance(data)
            batch.encoded[iid] = data
    elif tag == INDEX:
        topic, name, text, instance, node = text_fields(key[1:])
        at = Correlation(topic, name, text)
        if value is None:
            batch.index_del.append((at, instance, node))
        else:
            only_one = _fields(value, 2, optional=1)[1]
            batch.index_put.append((at, instance, node, bool(only_one)))
    elif tag == TIMER:
        instance, timer = text_fields(key[1:])
        if value is None:
            batch.cancel_timer(instance, timer)
        else:
            batch.set_timer(instance, timer, float(_fields(value, 2)[1]))
    elif tag == JOB:
        instance, node = text_fields(key[1:-8])
        seq = int(U64.unpack(key[-8:])[0])
        if value is None:
            batch.jobs_del.append((instance, node, seq))
        else:
            _, job, payload = _fields(value, 3)
            batch.jobs_put.append(PendingJob(instance, node, job, seq, payload))
    elif tag == POSITION:
        (consumer,) = text_fields(key[1:])
        if value is None:
            raise ChangelogError(f"a consumer position has no tombstone: {key!r}")
        batch.positions[consumer] = int(_fields(value, 2)[1])
    elif tag == SEEN:
        topic, message_id = text_fields(key[1:])
        if value is None:
            batch.seen_del.append((topic, message_id))  # purged (expired)
        else:
            batch.seen_at[(topic, message_id)] = float(_fields(value, 2)[1])
    elif tag == BUFFERED:
        if len(key) != 9:
            raise ChangelogError(f"bad buffered-message key {key!r}")
        buf_id = int(U64.unpack(key[1:])[0])
        if value is None:
            batch.buffer_del.append(buf_id)
        else:
            _, topic, name, text, payload, expires = _fields(value, 6)
            batch.buffer_put.append((Correlation(topic, name, text), payload, float(expires)))
            batch.buffer_ids.append(buf_id)
    elif key.startswith(_PROFILE):
        template, keys = text_fields(key[len(_PROFILE) :])
        if value is not None:
            names = msgspec.json.decode(keys)
            if not isinstance(names, list):
                raise ChangelogError(f"bad search profile key {key!r}")
            batch.search_profiles.append((template, tuple(str(n) for n in names)))
    elif tag == SEARCH:
        instance, name = text_fields(key[1:])
        if value is None:
            batch.search_del.append((instance, name))
        else:
            _, text, created = _fields(value, 3)
            batch.search_put.append((instance, name, str(text), float(created)))
    elif tag == BULK_ITEM:
        (job,) = text_fields(key[1:-8])
        seq = int(U64.unpack(key[-8:])[0])
        if value is None:
            batch.bulk_items_del.append((job, seq))
        else:
            batch.bulk_items_put.append((job, seq, str(_fields(value, 2)[1])))
    elif tag == BULK_SHARE:
        (job,) = text_fields(key[1:])
        if value is None:
            raise ChangelogError(f"a bulk job's share has no tombstone: {key!r}")
        batch.bulk_shares[job] = decode_share(_fields(value, 2)[1])
    elif tag == SCHEDULE:
        (name,) = text_fields(key[1:])
        batch.schedules[name] = None if value is None else decode_schedule(_fields(value, 2)[1])
    elif tag == HISTORY:
        (instance,) = text_fields(key[1:-8])
        first = int(U64.unpack(key[-8:])[0])
        if value is None:
            batch.history_del.append((instance, first))
        else:
            batch.history_put.append((instance, first, bytes(_fields(value, 2)[1])))
    else:
        raise ChangelogError(f"unknown changelog key tag {tag!r} (key {key[:60]!r})")


# Restore ----------------------------------------------------------------------------------------


class Restorer:
    """Applies changelog records of one partition to a store, in order and idempotently.

    Records come as ``(offset, key, value)`` with increasing offsets. Every ``chunk``
    records become one ``Store.commit`` that also records the offset of its last record as
    the partition's checkpoint, so an interrupted restore resumes where it stopped and
    records at or before the checkpoint are skipped. Applying a record again (for example
    into a store whose checkpoint is older than its state) leaves the same state: every
    record sets or deletes one whole row."""

    def __init__(self, store: Store, partition: int, *, chunk: int = 10_000) -> None:
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.store = store
        self.partition = partition
        self.chunk = chunk
        self.applied = 0  # records applied by this restorer
        self.skipped = 0  # records at or before the checkpoint

    def checkpoint(self) -> int | None:
        return self.store.changelog_checkpoint(self.partition)

    def apply(self, records: Iterable[tuple[int, bytes, bytes | None]], *, skip_applied: bool = True) -> int:
        """Apply records in order; return how many were applied (not skipped)."""
        last = self.checkpoint()
        floor = last if skip_applied and last is not None else -1
        previous = -1
        pending: list[Record] = []
        pending_offset = -1
        applied = 0
        for offset, key, value in records:
            if offset <= previous:
                raise ValueError(f"changelog offsets must increase: {offset} after {previous}")
            previous = offset
            if offset <= floor:
                self.skipped += 1
                continue
            pending.append((key, value))
            pending_offset = offset
            if len(pending) >= self.chunk:
                self._commit(pending, pending_offset)
                applied += len(pending)
                pending = []
        if pending:
            self._commit(pending, pending_offset)
            applied += len(pending)
        self.applied += applied
        return applied

    def advance(self, offset: int) -> None:
        """Record that the partition holds no records up to ``offset`` beyond those applied
        (a transactional log ends with commit markers, and aborted records are skipped), so
        that the next restore starts after it."""
        last = self.checkpoint()
        if last is None or offset > last:
            self.store.commit(WriteBatch(changelog_offsets={self.partition: offset}), 0.0)

    def _commit(self, records: list[Record], offset: int) -> None:
        batch = records_batch(records)
        batch.changelog_offsets[self.partition] = offset
        # ``ts`` only stamps appends and ``seen`` entries; a restore has neither.
        self.store.commit(batch, 0.0)


@dataclass
class RestoreResult:
    partition: int
    start: int  # first offset read
    end: int  # the partition's end offset (last stable offset under read_committed)
    records: int  # records read and applied
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")
