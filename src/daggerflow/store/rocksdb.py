"""RocksDB store (the ``rocksdb`` extra): the SQLite store's tables as key ranges of one
RocksDB database, committed atomically through a RocksDB write batch.

Durability matches the SQLite store: the write-ahead log is always on, so every commit
survives a killed process; ``durability="full"`` syncs the log on each commit (survives
power loss). One process owns a database at a time (an exclusive lock file ``<dir>.lock``
next to the database directory), so the worker is the single writer and topic heads and
the buffered-message id counter live in memory.

Key layout: a one-byte table tag followed by its fields, in the order-preserving encoding
of ``store/keys.py`` (which the changelog shares).

====  ========================================================  ============================
tag   key fields                                                value
====  ========================================================  ============================
m     name                                                      meta (application, schema)
i     id                                                        encoded Instance
r     id                                                        msgpack [status, created,
                                                                template] (to move indexes)
c     created, id                                               -- (all instances)
s     status, created, id                                       -- (by status)
t     template, created, id                                     -- (by template)
b     status, template, created, id                             -- (by status and template)
x     topic, key, value, instance, node                         ``01`` if match_only_one,
                                                                else empty
X     instance, topic, key, value, node                         -- (its reverse, to drop an
                                                                instance's entries)
T     instance, timer key                                       due (float)
j     instance, node, seq                                       msgpack [job, payload]
q     topic, offset                                             msgpack [key, value,
                                                                headers, ts]
p     consumer                                                  offset
n     topic, message id                                         first seen (float)
N     first seen, topic, message id                             -- (to purge by age)
B     topic, key, value, id                                     msgpack [payload, expires]
e     id                                                        the ``B`` key
h     instance, first seq (u64)                                msgpack array of history
                                                                entries (model.history)
L     changelog partition (u64)                                 offset of the last applied
                                                                changelog record (u64)
a, A  the search index: rows, profiles and their reverse (``store/rocksdb_search.py``)
u     bulk job id                                               encoded ``BulkShare``
U     bulk job id, seq (u64)                                    instance id (UTF-8): one the
                                                                share has yet to act on
S     schedule name                                             encoded Schedule
v     template, version                                         msgpack [definition, seen]
k     template, status                                          how many instances (u64:
                                                                ``store/rocksdb_counts.py``)
====  ========================================================  ============================

Older ranges need no migration: a missing range reads as empty (no ``L``: no checkpoint; no
``S``, ``u``, ``v``, ``h``: none kept yet), and an ``x`` entry written before entries had a
value reads as "not match_only_one". Schema 2 added the counts: a version 1 database gets
them on open, counted from its ``r`` records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import msgspec
from rocksdict import Options, Rdict, ReadOptions, WriteOptions
from rocksdict import WriteBatch as RocksBatch

from ..errors import StoreError
from ..model.instance import Correlation, Instance, decode_instance, encode_instance
from .base import Message, PendingJob, WriteBatch
from .keys import F64 as _F64
from .keys import U64 as _U64
from .keys import f64 as _f64
from .keys import text_field as _s
from .keys import text_fields as _fields
from .keys import u64 as _u64
from .keys import unescape as _unescape
from .lockfile import LockFile, private_dirs
from .rocksdb_bulk import RocksBulk
from .rocksdb_console import RocksConsole
from .rocksdb_counts import Counts, RocksCounts
from .rocksdb_history import RocksHistory
from .rocksdb_schedules import RocksSchedules
from .rocksdb_search import RocksSearch
from .rocksdb_tables import RocksTables
from .rocksdb_topics import RocksTopicRetention
from .rocksdb_versions import RocksVersions

APPLICATION = b"daggerflow"
SCHEMA_VERSION = 2  # 2: the kept counts (``k``)

_META_APP = b"mapplication"
_META_SCHEMA = b"mschema_version"

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()
_LAST_OFFSET = b"\xff" * 8
_ONLY_ONE = b"\x01"  # value of a match_only_one correlation entry (others: empty)


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    return dict(headers) if headers else None


class RocksDBStore(  # (RocksCounts before RocksSearch: its counts, not the stub, are found)
    RocksTopicRetention, RocksCounts, RocksSearch, RocksBulk, RocksHistory, RocksSchedules, RocksVersions,
    RocksConsole, RocksTables,
):  # fmt: skip
    def __init__(self, path: str, *, durability: str = "normal") -> None:
        self.path = path
        self._lockfile = LockFile(path)
        self._heads: dict[str, int] = {}
        self._next_buffer_id: int | None = None
        # Instance id -> (status, created, template) of recent commits: the ``r`` record,
        # without reading it back (the process is the only writer).
        self._listed: dict[str, tuple[str, float, str]] = {}
        target = Path(path)
        private_dirs(target.parent)
        self._lockfile.acquire(path)
        try:
            self.db = self._open(target)
        except StoreError:
            self._lockfile.release()
            raise
        self._write = WriteOptions()
        self._write.sync = durability == "full"
        try:
            self._check_and_init()
        except StoreError:
            self.db.close()
            self._lockfile.release()
            raise

    def _open(self, target: Path) -> Rdict:
        if target.exists() and not target.is_dir():
            raise StoreError(f"{self.path} is a file, not a RocksDB database directory; refusing to touch it")
        fresh = not target.exists() or not any(target.iterdir())
        if not fresh and not (target / "CURRENT").exists():
            raise StoreError(
                f"{self.path} is a directory that daggerflow did not create (not a RocksDB "
                "database); refusing to touch it"
            )
        options = Options(raw_mode=True)
        options.create_if_missing(fresh)
        options.set_paranoid_checks(True)
        options.set_keep_log_file_num(2)
        try:
            return Rdict(str(target), options)
        except Exception as exc:
            raise StoreError(f"{self.path} is not a usable daggerflow database: {exc}") from exc

    def _check_and_init(self) -> None:
        db = self.db
        app = db.get(_META_APP)
        if app is None:
            if self._first_key(b"") is not None:
                raise StoreError(
                    f"{self.path} is a RocksDB database that daggerflow did not create "
                    "(no daggerflow marker); refusing to touch it"
                )
            batch = RocksBatch(raw_mode=True)
            batch.put(_META_APP, APPLICATION)
            batch.put(_META_SCHEMA, str(SCHEMA_VERSION).encode())
            db.write(batch, self._sync())
            return
        if app != APPLICATION:
            raise StoreError(
                f"{self.path} is a RocksDB database that daggerflow did not create "
                f"(application {app!r}); refusing to touch it"
            )
        raw = db.get(_META_SCHEMA)
        try:
            version = int(raw) if raw is not None else 0
        except ValueError:
            raise StoreError(f"{self.path} is corrupt: schema version {raw!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this daggerflow "
                f"supports ({SCHEMA_VERSION}); upgrade daggerflow"
            )
        if version < 1:
            raise StoreError(f"{self.path} is corrupt: schema version {version}")
        if version == 1:  # no kept counts yet: count once, and mark it counted in the same write
            batch = RocksBatch(raw_mode=True)
            self._build_counts(batch)
            batch.put(_META_SCHEMA, str(SCHEMA_VERSION).encode())
            db.write(batch, self._sync())

    @staticmethod
    def _sync() -> WriteOptions:
        options = WriteOptions()
        options.sync = True
        return options

    # Scans ----------------------------------------------------------------------------

    def _first_key(self, prefix: bytes) -> bytes | None:
        it = self.db.iter()
        it.seek(prefix)
        key: bytes | None = it.key() if it.valid() else None
        del it
        return key if key is not None and key.startswith(prefix) else None

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        """Keys and values under ``prefix`` in order, from ``start`` (a full key) if given.
        Consume it fully or close it: an open iterator keeps the database open."""
        read = ReadOptions()
        read.set_iterate_upper_bound(_prefix_end(prefix))
        it = self.db.iter(read)
        try:
            it.seek(start if start is not None else prefix)
            while it.valid():
                yield it.key(), it.value()
                it.next()
        finally:
            del it

    def _keys(self, prefix: bytes, limit: int | None = None, skip: int = 0) -> list[bytes]:
        out: list[bytes] = []
        if limit is not None and limit <= 0:
            return out
        scan = self._scan(prefix)
        try:
            for key, _ in scan:
                if skip:
                    skip -= 1
                    continue
                out.append(key)
                if limit is not None and len(out) >= limit:
                    break
        finally:
            scan.close()
        return out

    def _last_key(self, prefix: bytes) -> bytes | None:
        it = self.db.iter()
        it.seek_for_prev(prefix + b"\xff" * 9)
        key: bytes | None = it.key() if it.valid() else None
        del it
        return key if key is not None and key.startswith(prefix) else None

    # Reads ----------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> Instance | None:
        data = self.db.get(b"i" + _s(instance_id))
        return None if data is None else decode_instance(data)

    @staticmethod
    def _index_prefix(status: str | None, template: str | None) -> bytes:
        if status and template:
            return b"b" + _s(status) + _s(template)
        if status:
            return b"s" + _s(status)
        if template:
            return b"t" + _s(template)
        return b"c"

    def list_instances(
        self, *, status: str | None, template: str | None, limit: int, offset: int
    ) -> list[Instance]:
        prefix = self._index_prefix(status, template)
        cut = len(prefix) + 8  # the created time, then the id
        keys: list[str | int | float | bytes | bool] = [
            b"i" + k[cut:] for k in self._keys(prefix, limit=limit, skip=max(0, offset))
        ]
        if not keys:
            return []
        found: list[bytes | None] = self.db.get(keys) or []
        return [decode_instance(data) for data in found if data is not None]

    def lookup(self, at: Correlation) -> list[tuple[str, str, bool]]:
        prefix = b"x" + _s(at.topic) + _s(at.key) + _s(at.value)
        out: list[tuple[str, str, bool]] = []
        for key, value in self._scan(prefix):
            instance, node = _fields(key[len(prefix) :])
            out.append((instance, node, value == _ONLY_ONE))
        return out

    def all_timers(self) -> list[tuple[str, str, float]]:
        out: list[tuple[str, str, float]] = []
        for key, value in self._scan(b"T"):
            instance, timer = _fields(key[1:])
            out.append((instance, timer, _F64.unpack(value)[0]))
        return out

    def pending_jobs(self) -> list[PendingJob]:
        out: list[PendingJob] = []
        for key, value in self._scan(b"j"):
            instance, node = _fields(key[1:-8])
            job, payload = _unpack.decode(value)
            out.append(PendingJob(instance, node, job, _U64.unpack(key[-8:])[0], payload))
        return out

    def buffered(self, at: Correlation, now: float) -> list[tuple[int, Any]]:
        prefix = b"B" + _s(at.topic) + _s(at.key) + _s(at.value)
        out: list[tuple[int, Any]] = []
        for key, value in self._scan(prefix):
            payload, expires = _unpack.decode(value)
            if expires > now:
                out.append((_U64.unpack(key[-8:])[0], payload))
        return out

    def has_seen(self, topic: str, message_id: str) -> bool:
        return self.db.get(b"n" + _s(topic) + _s(message_id)) is not None

    def position(self, consumer: str) -> int | None:
        value = self.db.get(b"p" + _s(consumer))
        return None if value is None else int(_U64.unpack(value)[0])

    def changelog_checkpoint(self, partition: int) -> int | None:
        value = self.db.get(b"L" + _u64(partition))
        return None if value is None else int(_U64.unpack(value)[0])

    def read(self, topic: str, start: int, limit: int) -> list[Message]:
        prefix = b"q" + _s(topic)
        out: list[Message] = []
        if limit <= 0:
            return out
        scan = self._scan(prefix, prefix + _u64(max(0, start)))
        try:
            for key, value in scan:
                k, v, headers, ts = _unpack.decode(value)
                out.append(Message(topic, _U64.unpack(key[-8:])[0], k, v, headers or {}, ts))
                if len(out) >= limit:
                    break
        finally:
            scan.close()
        return out

    def end_offset(self, topic: str) -> int:
        # The lock file makes this process the only writer, so the head can live in memory.
        head = self._heads.get(topic)
        if head is None:
            prefix = b"q" + _s(topic)
            last = self._last_key(prefix)
            head = 0 if last is None else int(_U64.unpack(last[-8:])[0]) + 1
            self._heads[topic] = head
        return head

    def topics(self) -> list[str]:
        out: list[str] = []
        it = self.db.iter()
        it.seek(b"q")
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(b"q"):
                break
            topic = _unescape(key[1:-10])
            out.append(topic)
            it.seek(b"q" + _s(topic) + b"\xff" * 9)
        del it
        return out

    # Writes ---------------------------------------------------------------------------

    def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None, ts: float
    ) -> int:
        """Append one message in its own write (durable on return)."""
        offset = self.end_offset(topic)
        self.db.put(
            b"q" + _s(topic) + _u64(offset), _pack.encode((key, value, _headers(headers), ts)), self._write
        )
        self._heads[topic] = offset + 1
        return offset

    def _buffer_id(self) -> int:
        if self._next_buffer_id is None:
            last = self._last_key(b"e")
            self._next_buffer_id = 1 if last is None else int(_U64.unpack(last[-8:])[0]) + 1
        n = self._next_buffer_id
        self._next_buffer_id = n + 1
        return n

    def _reserve_buffer_id(self, buf_id: int) -> None:
        """Make sure later assigned ids are above ``buf_id`` (a restored entry's id)."""
        self._buffer_id()
        assert self._next_buffer_id is not None
        self._next_buffer_id = max(self._next_buffer_id - 1, buf_id + 1)

    def commit(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        db = self.db
        wb = RocksBatch(raw_mode=True)
        next_buffer_id = self._next_buffer_id
        listed: dict[str, tuple[str, float, str] | None] = {}
        counts: Counts = Counter()  # (template, status) -> change of the kept count
        for iid, inst in batch.instances.items():
            sid = _s(iid)
            old = self._listed.get(iid)
            if old is None:
                raw = db.get(b"r" + sid)
                if raw is not None:
                    old = tuple(_unpack.decode(raw))
            if inst is None:
                if old is not None:
                    self._drop_instance(wb, sid, old)
                    counts[(old[2], old[0])] -= 1
                listed[iid] = None
                continue
            status = inst.root.status
            # Like the SQLite store, an instance keeps its first template and creation time.
            if old is None:
                created, template = inst.root.time_created, inst.template_name
                at = _f64(created) + sid
                wb.put(b"c" + at, b"")
                wb.put(b"t" + _s(template) + at, b"")
                moved = True
            else:
                old_status, created, template = old
                at = _f64(created) + sid
                moved = old_status != status
                if moved:
                    wb.delete(b"s" + _s(old_status) + at)
                    wb.delete(b"b" + _s(old_status) + _s(template) + at)
                    counts[(template, old_status)] -= 1
            if moved:
                counts[(template, status)] += 1
                wb.put(b"s" + _s(status) + at, b"")
                wb.put(b"b" + _s(status) + _s(template) + at, b"")
                wb.put(b"r" + sid, _pack.encode((status, created, template)))
            listed[iid] = (status, created, template)
            wb.put(b"i" + sid, batch.encoded.get(iid) or encode_instance(inst))
        counted = self._write_counts(wb, counts) if counts else {}
        if batch.history_put or batch.history_del:
            self._write_history(wb, batch)
        for c, instance, node in batch.index_del:
            wb.delete(b"x" + _s(c.topic) + _s(c.key) + _s(c.value) + _s(instance) + _s(node))
            wb.delete(b"X" + _s(instance) + _s(c.topic) + _s(c.key) + _s(c.value) + _s(node))
        for c, instance, node, only_one in batch.index_put:
            wb.put(b"x" + _s(c.topic) + _s(c.key) + _s(c.value) + _s(instance) + _s(node),
                   _ONLY_ONE if only_one else b"")  # fmt: skip
            wb.put(b"X" + _s(instance) + _s(c.topic) + _s(c.key) + _s(c.value) + _s(node), b"")
        for instance, timer in batch.timers_del:
            wb.delete(b"T" + _s(instance) + _s(timer))
        for (instance, timer), due in batch.timers_set.items():
            wb.put(b"T" + _s(instance) + _s(timer), _F64.pack(due))
        for instance, node, seq in batch.jobs_del:
            wb.delete(b"j" + _s(instance) + _s(node) + _u64(seq))
        for job in batch.jobs_put:
            wb.put(
                b"j" + _s(job.instance) + _s(job.node) + _u64(job.seq), _pack.encode((job.job, job.payload))
            )
        heads: dict[str, int] = {}
        appended: list[tuple[str, int]] = []
        for out in batch.appends:
            offset = heads.get(out.topic)
            if offset is None:
                offset = self.end_offset(out.topic)
            heads[out.topic] = offset + 1
            wb.put(
                b"q" + _s(out.topic) + _u64(offset),
                _pack.encode((out.key, out.value, _headers(out.headers), ts)),
            )
            appended.append((out.topic, offset))
        for consumer, position in batch.positions.items():
            wb.put(b"p" + _s(consumer), _u64(position))
        for topic, message_id in batch.seen_del:
            ids = _s(topic) + _s(message_id)
            old = db.get(b"n" + ids)
            if old is not None:
                wb.delete(b"N" + _f64(_F64.unpack(old)[0]) + ids)
                wb.delete(b"n" + ids)
        for topic, message_id in batch.seen:
            ids = _s(topic) + _s(message_id)
            wb.put(b"n" + ids, _F64.pack(ts))
            wb.put(b"N" + _f64(ts) + ids, b"")
        for buf_id in batch.buffer_del:
            ref = b"e" + _u64(buf_id)
            key = db.get(ref)
            if key is not None:
                wb.delete(key)
                wb.delete(ref)
        given = batch.buffer_ids
        assigned: list[int] = []
        for n, (c, payload, expires) in enumerate(batch.buffer_put):
            if given:
                buf_id = given[n]
                self._reserve_buffer_id(buf_id)
                old = db.get(b"e" + _u64(buf_id))
                if old is not None:
                    wb.delete(old)  # an entry with a given id replaces the one it had
            else:
                buf_id = self._buffer_id()
                assigned.append(buf_id)
            ref = b"e" + _u64(buf_id)
            key = b"B" + _s(c.topic) + _s(c.key) + _s(c.value) + ref[1:]
            wb.put(key, _pack.encode((payload, expires)))
            wb.put(ref, key)
        for (topic, message_id), first in batch.seen_at.items():
            ids = _s(topic) + _s(message_id)
            old = db.get(b"n" + ids)
            if old is not None:
                wb.delete(b"N" + _f64(_F64.unpack(old)[0]) + ids)
            wb.put(b"n" + ids, _F64.pack(first))
            wb.put(b"N" + _f64(first) + ids, b"")
        if batch.schedules:
            self._write_schedules(wb, batch)
        for partition, offset in batch.changelog_offsets.items():
            wb.put(b"L" + _u64(partition), _u64(offset))
        fresh = (
            self._search_writes(wb, batch.search_put, batch.search_del, batch.search_profiles)
            if batch.search_put or batch.search_del or batch.search_profiles
            else []
        )
        if batch.bulk_shares or batch.bulk_items_put or batch.bulk_items_del:
            self._write_bulk(wb, batch)
        try:
            db.write(wb, self._write)
        except BaseException:
            self._next_buffer_id = next_buffer_id  # the ids were not used
            raise
        self._heads.update(heads)  # only once the batch is written
        self._profiles_written(fresh)
        self._counts_written(counted)
        if assigned:
            batch.buffer_ids = assigned
        if len(self._listed) + len(listed) > 100_000:
            self._listed.clear()
        for iid, info in listed.items():
            if info is None:
                self._listed.pop(iid, None)
            else:
                self._listed[iid] = info
        return appended

    def _drop_instance(self, wb: RocksBatch, sid: bytes, old: tuple[str, float, str]) -> None:
        """Delete an instance, its listing keys, correlation entries and timers."""
        status, created, template = old
        at = _f64(created) + sid
        for key in (
            b"i" + sid,
            b"r" + sid,
            b"c" + at,
            b"s" + _s(status) + at,
            b"t" + _s(template) + at,
            b"b" + _s(status) + _s(template) + at,
        ):
            wb.delete(key)
        reverse = b"X" + sid
        for key in self._keys(reverse):
            topic, name, value, node = _fields(key[len(reverse) :])
            wb.delete(key)
            wb.delete(b"x" + _s(topic) + _s(name) + _s(value) + sid + _s(node))
        for key in self._keys(b"T" + sid):
            wb.delete(key)
        for key in self._keys(b"h" + sid):
            wb.delete(key)
        self._drop_search_rows(wb, sid)

    def expired(self, now: float, seen_ttl: float, limit: int) -> tuple[list[tuple[str, str]], list[int]]:
        buffered: list[int] = []
        for key, value in self._scan(b"B"):
            if len(buffered) >= limit:
                break
            if _unpack.decode(value)[1] <= now:
                buffered.append(int(_U64.unpack(key[-8:])[0]))
        seen: list[tuple[str, str]] = []
        cutoff = _f64(now - seen_ttl)
        scan = self._scan(b"N")
        try:
            for key, _ in scan:
                if key[1:9] >= cutoff or len(seen) >= limit:
                    break
                first = self.db.get(b"n" + key[9:])
                # Only if this is the entry's own time (an id seen again keeps a newer one).
                if first is not None and _f64(_F64.unpack(first)[0]) == key[1:9]:
                    topic, message_id = _fields(key[9:])
                    seen.append((topic, message_id))
        finally:
            scan.close()
        return seen, buffered

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            self._lockfile.release()
