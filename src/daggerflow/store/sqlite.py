"""SQLite store: instances, index, timers, jobs, topics and positions in one WAL database.

One process owns a database at a time (an exclusive lock file next to it), so the worker is
the single writer. Commits use ``synchronous=NORMAL`` by default: in WAL mode that survives
a killed process (every committed transaction is in the WAL); ``durability="full"`` also
survives power loss at the cost of an fsync per commit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..errors import StoreError
from ..model.bulk import BulkShare, decode_share, encode_share
from ..model.instance import Correlation, Instance, decode_instance, encode_instance
from ..model.schedule import Schedule, decode_schedule, encode_schedule
from .base import Message, PendingJob, WriteBatch
from .lockfile import LockFile, private_dirs
from .sqlite_checkpoint import Checkpointer
from .sqlite_console import SQLiteConsole
from .sqlite_search import SQLiteSearch

log = logging.getLogger(__name__)

APPLICATION_ID = 0x44414746  # "DAGF": marks the file as ours in the SQLite header
# 2: the changelog table (changelog checkpoints); 3: correlation.only_one; 4: bulk jobs, schedules,
# template versions, history and the search index
SCHEMA_VERSION = 4

# The search index (``store/search_plan.py``): an instance's searchable parameters and the
# (template, search keys) of the instances held. No index on ``updated`` nor on the
# correlation value: each would cost every pizza workflow ~1% (callgrind), for filters that
# read, instead, the instances in creation order and the waiting listeners' entries.
_SEARCH_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS search (instance TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, "
    "created REAL NOT NULL, PRIMARY KEY (instance, name)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS search_value ON search (name, value, created)",
    "CREATE TABLE IF NOT EXISTS search_profiles (template TEXT NOT NULL, keys TEXT NOT NULL, "
    "PRIMARY KEY (template, keys)) WITHOUT ROWID",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, template TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS instances_status ON instances (status, created);
CREATE INDEX IF NOT EXISTS instances_template ON instances (template, created);
CREATE INDEX IF NOT EXISTS instances_created ON instances (created);
CREATE TABLE IF NOT EXISTS correlation (
    topic TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    instance TEXT NOT NULL, node TEXT NOT NULL, only_one INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, key, value, instance, node));
CREATE TABLE IF NOT EXISTS timers (
    instance TEXT NOT NULL, key TEXT NOT NULL, due REAL NOT NULL,
    PRIMARY KEY (instance, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    instance TEXT NOT NULL, node TEXT NOT NULL, seq INTEGER NOT NULL, job TEXT NOT NULL,
    payload BLOB, PRIMARY KEY (instance, node, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    topic TEXT NOT NULL, "offset" INTEGER NOT NULL, key TEXT, value, headers TEXT,
    ts REAL NOT NULL, PRIMARY KEY (topic, "offset")) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (consumer TEXT PRIMARY KEY, "offset" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    topic TEXT NOT NULL, id TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (topic, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buffered (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    payload BLOB, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buffered_at ON buffered (topic, key, value);
CREATE TABLE IF NOT EXISTS changelog (partition INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS bulk_jobs (
    id TEXT PRIMARY KEY, created REAL NOT NULL, finished INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bulk_items (
    job TEXT NOT NULL, seq INTEGER NOT NULL, instance TEXT NOT NULL,
    PRIMARY KEY (job, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS template_versions (
    template TEXT NOT NULL, version TEXT NOT NULL, definition BLOB NOT NULL, seen REAL NOT NULL,
    PRIMARY KEY (template, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    instance TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (instance, seq)) WITHOUT ROWID;
""" + "".join(s + ";\n" for s in _SEARCH_SCHEMA)

# An instance's history rows (model.history): keyed by the seq of their first entry.
_HISTORY = (
    "CREATE TABLE IF NOT EXISTS history (instance TEXT NOT NULL, seq INTEGER NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (instance, seq)) WITHOUT ROWID"
)


def _add_only_one(db: sqlite3.Connection) -> None:
    # Entries indexed before read as not match_only_one (the processor reads a local node's
    # own flag). Idempotent, like every step: a database may claim an older version.
    if "only_one" not in {row[1] for row in db.execute("PRAGMA table_info(correlation)")}:
        db.execute("ALTER TABLE correlation ADD COLUMN only_one INTEGER NOT NULL DEFAULT 0")


# Schema version -> the steps (statements, or functions of the connection) that bring a
# database of that version to the next one.
_MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection], None]]] = {
    1: ['CREATE TABLE IF NOT EXISTS changelog (partition INTEGER PRIMARY KEY, "offset" INTEGER NOT NULL)'],
    2: [_add_only_one],
    3: [
        "CREATE TABLE IF NOT EXISTS bulk_jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, "
        "finished INTEGER NOT NULL, data BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bulk_items (job TEXT NOT NULL, seq INTEGER NOT NULL, "
        "instance TEXT NOT NULL, PRIMARY KEY (job, seq)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, data BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS template_versions (template TEXT NOT NULL, version TEXT NOT NULL, "
        "definition BLOB NOT NULL, seen REAL NOT NULL, PRIMARY KEY (template, version)) WITHOUT ROWID",
        _HISTORY,
        # Instances created before the search index have no search rows: an empty profile
        # says so, and their parameters are found by reading them.
        *_SEARCH_SCHEMA,
        "INSERT OR IGNORE INTO search_profiles SELECT DISTINCT template, '[]' FROM instances",
    ],
}

_json = msgspec.json.Encoder()
_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()


def _headers_text(headers: dict[str, str] | None) -> str | None:
    return _json.encode(headers).decode() if headers else None


class SQLiteStore(SQLiteSearch, SQLiteConsole):
    def __init__(self, path: str, *, durability: str = "normal") -> None:
        self.path = path
        self._lockfile = LockFile(path)
        self._heads: dict[str, int] = {}
        self._profiles: dict[str, set[tuple[str, ...]]] | None = None  # (search_profiles, read once)
        # The correlation table indexes the waiting listeners of this store's own instances
        # (false for a Kafka partition: it holds the entries it owns, of any instance).
        self.local_correlations = True
        if path != ":memory:":
            private_dirs(Path(path).parent)
            self._lockfile.acquire(path)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check_and_migrate()
        except (sqlite3.DatabaseError, StoreError) as exc:
            # Release the file (connection and lock) so a fixed file can be opened again.
            if hasattr(self, "db"):
                self.db.close()
            self._lockfile.release()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{path} is not a usable daggerflow database: {exc}") from exc
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.db.execute("PRAGMA cache_size=-65536")
        self._checkpointer: Checkpointer | None = None
        if path != ":memory:":
            # Checkpoint the WAL from a background thread: done inside a commit, it would
            # stall the processor for milliseconds every ~1,000 pages.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = Checkpointer(path)

    def _check_and_migrate(self) -> None:
        db = self.db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            # Space freed by topic retention can be given back to the file system in small
            # steps (``release_space``). It must be set before the first table exists;
            # older files keep reusing their free pages instead.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is a SQLite database that daggerflow did not create "
                f"(application_id {app_id:#x}); refusing to touch it"
            )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this daggerflow "
                f"supports ({SCHEMA_VERSION}); upgrade daggerflow"
            )
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StoreError(f"{self.path} is corrupt: {ok}")
        if 1 <= version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a database of an older schema version to SCHEMA_VERSION, in one transaction."""
        with self._transaction():
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    if isinstance(statement, str):
                        self.db.execute(statement)
                    else:
                        statement(self.db)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        log.info("%s: schema migrated from version %d to %d", self.path, version, SCHEMA_VERSION)

    # Reads ----------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> Instance | None:
        row = self.db.execute("SELECT data FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return decode_instance(row[0]) if row else None

    def _where(self, status: str | None, template: str | None) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if status:
            clauses.append("status = ?")
            args.append(status)
        if template:
            clauses.append("template = ?")
            args.append(template)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args

    def list_instances(
        self, *, status: str | None, template: str | None, limit: int, offset: int
    ) -> list[Instance]:
        where, args = self._where(status, template)
        rows = self.db.execute(
            f"SELECT data FROM instances{where} ORDER BY created, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [decode_instance(r[0]) for r in rows]

    def count_instances(self, *, status: str | None, template: str | None) -> int:
        where, args = self._where(status, template)
        return int(self.db.execute(f"SELECT COUNT(*) FROM instances{where}", args).fetchone()[0])

    def lookup(self, at: Correlation) -> list[tuple[str, str, bool]]:
        rows = self.db.execute(
            "SELECT instance, node, only_one FROM correlation WHERE topic=? AND key=? AND value=?",
            (at.topic, at.key, at.value),
        )
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def history_rows(self, instance_id: str) -> list[tuple[int, bytes]]:
        rows = self.db.execute("SELECT seq, data FROM history WHERE instance=? ORDER BY seq", (instance_id,))
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def all_timers(self) -> list[tuple[str, str, float]]:
        return [(r[0], r[1], r[2]) for r in self.db.execute("SELECT instance, key, due FROM timers")]

    def bulk_share(self, job: str) -> BulkShare | None:
        row = self.db.execute("SELECT data FROM bulk_jobs WHERE id=?", (job,)).fetchone()
        return None if row is None else decode_share(row[0])

    def bulk_active(self) -> list[BulkShare]:
        rows = self.db.execute("SELECT data FROM bulk_jobs WHERE finished=0 ORDER BY created, id")
        return [decode_share(r[0]) for r in rows]

    def bulk_recent(self, limit: int) -> list[BulkShare]:
        rows = self.db.execute("SELECT data FROM bulk_jobs ORDER BY created DESC, id DESC LIMIT ?", (limit,))
        return [decode_share(r[0]) for r in rows]

    def bulk_items(self, job: str, limit: int) -> list[tuple[int, str]]:
        rows = self.db.execute("SELECT seq, instance FROM bulk_items WHERE job=? ORDER BY seq LIMIT ?", (job, limit))
        return [(int(r[0]), str(r[1])) for r in rows]
    def get_schedule(self, name: str) -> Schedule | None:
        row = self.db.execute("SELECT data FROM schedules WHERE name = ?", (name,)).fetchone()
        return decode_schedule(row[0]) if row else None

    def list_schedules(self) -> list[Schedule]:
        return [decode_schedule(r[0]) for r in self.db.execute("SELECT data FROM schedules ORDER BY name")]

    def pending_jobs(self) -> list[PendingJob]:
        rows = self.db.execute("SELECT instance, node, job, seq, payload FROM jobs")
        return [
            PendingJob(r[0], r[1], r[2], r[3], None if r[4] is None else _unpack.decode(r[4])) for r in rows
        ]

    def buffered(self, at: Correlation, now: float) -> list[tuple[int, Any]]:
        rows = self.db.execute(
            "SELECT id, payload FROM buffered WHERE topic=? AND key=? AND value=? AND expires > ? ORDER BY id",
            (at.topic, at.key, at.value, now),
        )
        return [(r[0], _unpack.decode(r[1])) for r in rows]

    def has_seen(self, topic: str, message_id: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM seen WHERE topic=? AND id=?", (topic, message_id)).fetchone()
            is not None
        )

    def position(self, consumer: str) -> int | None:
        row = self.db.execute('SELECT "offset" FROM positions WHERE consumer=?', (consumer,)).fetchone()
        return int(row[0]) if row else None

    def changelog_checkpoint(self, partition: int) -> int | None:
        row = self.db.execute('SELECT "offset" FROM changelog WHERE partition=?', (partition,)).fetchone()
        return int(row[0]) if row else None

    def read(self, topic: str, start: int, limit: int) -> list[Message]:
        rows = self.db.execute(
            'SELECT "offset", key, value, headers, ts FROM messages WHERE topic=? AND "offset">=? '
            'ORDER BY "offset" LIMIT ?',
            (topic, start, limit),
        )
        return [
            Message(topic, r[0], r[1], r[2], msgspec.json.decode(r[3]) if r[3] else {}, r[4]) for r in rows
        ]

    def end_offset(self, topic: str) -> int:
        # The lock file makes this process the only writer, so the head can live in memory.
        head = self._heads.get(topic)
        if head is None:
            row = self.db.execute('SELECT MAX("offset") FROM messages WHERE topic=?', (topic,)).fetchone()
            head = self._heads[topic] = 0 if row[0] is None else int(row[0]) + 1
        return head

    def topics(self) -> list[str]:
        # A skip scan over the primary key: one seek per topic, not a pass over every message.
        rows = self.db.execute(
            "WITH RECURSIVE t(name) AS (SELECT MIN(topic) FROM messages UNION ALL "
            "SELECT (SELECT MIN(topic) FROM messages WHERE topic > t.name) FROM t WHERE t.name IS NOT NULL) "
            "SELECT name FROM t WHERE name IS NOT NULL"
        )
        return [r[0] for r in rows]

    # Topic retention (the embedded runtime's housekeeping) ----------------------------

    def first_offset(self, topic: str) -> int | None:
        """The oldest offset still stored in ``topic`` (None: the topic is empty)."""
        row = self.db.execute('SELECT MIN("offset") FROM messages WHERE topic=?', (topic,)).fetchone()
        return None if row[0] is None else int(row[0])

    def first_offset_since(self, topic: str, ts: float, start: int) -> int | None:
        """The first offset from ``start`` whose message was appended at ``ts`` or later.
        Messages are appended in time order, so this reads only the older ones."""
        row = self.db.execute(
            'SELECT "offset" FROM messages WHERE topic=? AND "offset">=? AND ts>=? ORDER BY "offset" LIMIT 1',
            (topic, start, ts),
        ).fetchone()
        return None if row is None else int(row[0])

    def trim(self, topic: str, start: int, end: int) -> int:
        """Delete the messages of ``topic`` at offsets ``start <= offset < end``, in one
        transaction; return how many. The caller keeps batches small, and never deletes
        the newest message: it carries the topic's next offset across restarts."""
        with self._transaction():
            cur = self.db.execute(
                'DELETE FROM messages WHERE topic=? AND "offset">=? AND "offset"<?', (topic, start, end)
            )
        return int(cur.rowcount)

    def release_space(self, max_pages: int) -> int:
        """Give up to ``max_pages`` free pages back to the file system when more than a
        quarter of the file is free; return how many pages it gave back. Below that, free
        pages are kept for the next writes: moving pages only to grow the file again would
        cost a WAL full of copies. A file without incremental auto-vacuum gives nothing."""
        db = self.db
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2 or max_pages < 1:  # 2: INCREMENTAL
            return 0
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        if free * 4 <= int(db.execute("PRAGMA page_count").fetchone()[0]):
            return 0
        # executescript steps the pragma to its end (execute() frees one page per step).
        db.executescript(f"PRAGMA incremental_vacuum({min(int(max_pages), free)})")
        return free - int(db.execute("PRAGMA freelist_count").fetchone()[0])

    # Writes ---------------------------------------------------------------------------

    def append(
        self, topic: str, key: str | None, value: Any, headers: dict[str, str] | None, ts: float
    ) -> int:
        """Append one message in its own transaction (durable on return)."""
        offset = self.end_offset(topic)
        with self._transaction():
            self.db.execute(
                'INSERT INTO messages (topic, "offset", key, value, headers, ts) VALUES (?,?,?,?,?,?)',
                (topic, offset, key, value, _headers_text(headers), ts),
            )
        self._heads[topic] = offset + 1
        return offset

    def save_template_version(self, template: str, version: str, definition: bytes, ts: float) -> None:
        """Keep a template version's definition (the first time it is seen; durable on return)."""
        with self._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO template_versions (template, version, definition, seen) VALUES (?,?,?,?)",
                (template, version, definition, ts),
            )

    def template_versions(self) -> list[tuple[str, str, bytes, float]]:
        rows = self.db.execute("SELECT template, version, definition, seen FROM template_versions ORDER BY seen")
        return [(str(t), str(v), bytes(d), float(s)) for t, v, d, s in rows]

    def _transaction(self) -> _Tx:
        return _Tx(self.db)

    def commit(self, batch: WriteBatch, ts: float) -> list[tuple[str, int]]:
        appended: list[tuple[str, int]] = []
        assigned: list[int] = []  # ids of new buffered messages
        db = self.db
        with self._transaction():
            puts = []
            dels = []
            for iid, inst in batch.instances.items():
                if inst is None:
                    dels.append((iid,))
                else:
                    root = inst.root
                    puts.append(
                        (
                            iid,
                            inst.template_name,
                            root.status,
                            root.time_created,
                            inst.lastupdated,
                            batch.encoded.get(iid) or encode_instance(inst),
                        )
                    )
            if puts:
                db.executemany(
                    "INSERT INTO instances (id, template, status, created, updated, data) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated=excluded.updated, data=excluded.data",
                    puts,
                )
            if dels:
                db.executemany("DELETE FROM instances WHERE id=?", dels)
                db.executemany("DELETE FROM correlation WHERE instance=?", dels)
                db.executemany("DELETE FROM timers WHERE instance=?", dels)
                db.executemany("DELETE FROM history WHERE instance=?", dels)
                db.executemany("DELETE FROM search WHERE instance=?", dels)
            if batch.history_del:
                db.executemany("DELETE FROM history WHERE instance=? AND seq=?", batch.history_del)
            if batch.history_put:
                db.executemany("INSERT OR REPLACE INTO history VALUES (?,?,?)", batch.history_put)
            if batch.search_del:
                db.executemany("DELETE FROM search WHERE instance=? AND name=?", batch.search_del)
            if batch.search_put:
                db.executemany("INSERT OR REPLACE INTO search VALUES (?,?,?,?)", batch.search_put)
            new_profiles = self._new_profiles(batch.search_profiles) if batch.search_profiles else ()
            if new_profiles:
                db.executemany(
                    "INSERT OR IGNORE INTO search_profiles VALUES (?,?)",
                    [(t, _json.encode(list(keys)).decode()) for t, keys in new_profiles],
                )
            if batch.index_del:
                db.executemany(
                    "DELETE FROM correlation WHERE topic=? AND key=? AND value=? AND instance=? AND node=?",
                    [(c.topic, c.key, c.value, i, n) for c, i, n in batch.index_del],
                )
            if batch.index_put:
                db.executemany(
                    "INSERT OR IGNORE INTO correlation VALUES (?,?,?,?,?,?)",
                    [(c.topic, c.key, c.value, i, n, int(o)) for c, i, n, o in batch.index_put],
                )
            if batch.timers_del:
                db.executemany("DELETE FROM timers WHERE instance=? AND key=?", list(batch.timers_del))
            if batch.timers_set:
                db.executemany(
                    "INSERT OR REPLACE INTO timers VALUES (?,?,?)",
                    [(i, k, d) for (i, k), d in batch.timers_set.items()],
                )
            if batch.jobs_del:
                db.executemany("DELETE FROM jobs WHERE instance=? AND node=? AND seq=?", batch.jobs_del)
            if batch.jobs_put:
                db.executemany(
                    "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?)",
                    [
                        (
                            j.instance,
                            j.node,
                            j.seq,
                            j.job,
                            None if j.payload is None else _pack.encode(j.payload),
                        )
                        for j in batch.jobs_put
                    ],
                )
            heads: dict[str, int] = {}
            if batch.appends:
                rows = []
                for out in batch.appends:
                    offset = heads.get(out.topic)
                    if offset is None:
                        offset = self.end_offset(out.topic)
                    heads[out.topic] = offset + 1
                    rows.append((out.topic, offset, out.key, out.value, _headers_text(out.headers), ts))
                    appended.append((out.topic, offset))
                db.executemany(
                    'INSERT INTO messages (topic, "offset", key, value, headers, ts) VALUES (?,?,?,?,?,?)',
                    rows,
                )
            if batch.positions:
                db.executemany("INSERT OR REPLACE INTO positions VALUES (?,?)", list(batch.positions.items()))
            if batch.seen_del:
                db.executemany("DELETE FROM seen WHERE topic=? AND id=?", batch.seen_del)
            if batch.seen:
                db.executemany(
                    "INSERT OR IGNORE INTO seen VALUES (?,?,?)", [(t, i, ts) for t, i in batch.seen]
                )
            if batch.seen_at:
                db.executemany(
                    "INSERT OR REPLACE INTO seen VALUES (?,?,?)",
                    [(t, i, at) for (t, i), at in batch.seen_at.items()],
                )
            if batch.buffer_del:
                db.executemany("DELETE FROM buffered WHERE id=?", [(i,) for i in batch.buffer_del])
            if batch.buffer_put and batch.buffer_ids:
                db.executemany(
                    "INSERT OR REPLACE INTO buffered (id, topic, key, value, payload, expires) VALUES (?,?,?,?,?,?)",
                    [
                        (buf_id, c.topic, c.key, c.value, _pack.encode(p), exp)
                        for buf_id, (c, p, exp) in zip(batch.buffer_ids, batch.buffer_put, strict=True)
                    ],
                )
            elif batch.buffer_put:
                for c, p, exp in batch.buffer_put:
                    cur = db.execute(
                        "INSERT INTO buffered (topic, key, value, payload, expires) VALUES (?,?,?,?,?)",
                        (c.topic, c.key, c.value, _pack.encode(p), exp),
                    )
                    assigned.append(int(cur.lastrowid or 0))
            if batch.bulk_shares or batch.bulk_items_put or batch.bulk_items_del:
                self._commit_bulk(batch)
            if batch.schedules:
                gone = [(n,) for n, sch in batch.schedules.items() if sch is None]
                if gone:
                    db.executemany("DELETE FROM schedules WHERE name=?", gone)
                db.executemany(
                    "INSERT OR REPLACE INTO schedules VALUES (?,?)",
                    [(n, encode_schedule(sch)) for n, sch in batch.schedules.items() if sch is not None],
                )
            if batch.changelog_offsets:
                db.executemany(
                    "INSERT OR REPLACE INTO changelog VALUES (?,?)", list(batch.changelog_offsets.items())
                )
        self._heads.update(heads)  # only once the transaction committed
        if new_profiles:
            self._profiles_written(new_profiles)
        if assigned:
            batch.buffer_ids = assigned
        return appended

    def _commit_bulk(self, batch: WriteBatch) -> None:
        db = self.db
        if batch.bulk_items_del:
            db.executemany("DELETE FROM bulk_items WHERE job=? AND seq=?", batch.bulk_items_del)
        if batch.bulk_items_put:
            db.executemany("INSERT OR REPLACE INTO bulk_items VALUES (?,?,?)", batch.bulk_items_put)
        if batch.bulk_shares:
            db.executemany(
                "INSERT OR REPLACE INTO bulk_jobs VALUES (?,?,?,?)",
                [(job, s.spec.created, int(s.finished is not None), encode_share(s))
                 for job, s in batch.bulk_shares.items()],
            )  # fmt: skip

    def expired(self, now: float, seen_ttl: float, limit: int) -> tuple[list[tuple[str, str]], list[int]]:
        seen = self.db.execute("SELECT topic, id FROM seen WHERE ts < ? LIMIT ?", (now - seen_ttl, limit))
        buffered = self.db.execute("SELECT id FROM buffered WHERE expires <= ? LIMIT ?", (now, limit))
        return [(str(t), str(i)) for t, i in seen], [int(i) for (i,) in buffered]

    def close(self) -> None:
        try:
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self.db.close()
        finally:
            self._lockfile.release()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
