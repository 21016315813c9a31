"""Small helpers shared by the behaviour tests of inventory §10.29-56 and the §8.2 scenario.

They read committed state (``engine.committed``) and the store's tables; they never drive
the engine themselves, so every test still goes through the public API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from daggerflow import Dagger, KafkaListenerTask, TaskLookupKey
from daggerflow.model.instance import Instance, Node
from daggerflow.store.sqlite import SQLiteStore

try:
    from daggerflow.store.rocksdb import RocksDBStore
except ImportError:  # without the rocksdb extra only SQLite stores exist

    class RocksDBStore:  # type: ignore[no-redef]
        def table(self, name: str) -> list[tuple[Any, ...]]:
            raise NotImplementedError

Predicate = Callable[[Instance], bool]


def node(inst: Instance, name: str) -> Node:
    """The one node whose full name is ``name`` or ends with ``"." + name``."""
    found = [n for n in inst.nodes.values() if n.name == name or n.name.endswith("." + name)]
    assert len(found) == 1, (
        f"{len(found)} nodes named {name!r}: {sorted(n.name for n in inst.nodes.values())}"
    )
    return found[0]


def nodes_named(inst: Instance, name: str) -> list[Node]:
    return [n for n in inst.nodes.values() if n.name == name or n.name.endswith("." + name)]


def state(engine: Dagger, iid: str) -> Instance:
    """The committed state of an instance that must exist."""
    inst = engine.committed(iid)
    assert inst is not None, f"instance {iid} not found"
    return inst


def status(engine: Dagger, iid: str, name: str | None = None) -> str:
    inst = engine.committed(iid)
    assert inst is not None, f"instance {iid} not found"
    return inst.status if name is None else node(inst, name).status


def node_is(name: str, expected: str) -> Predicate:
    return lambda inst: node(inst, name).status == expected


def param_is(key: str, expected: Any) -> Predicate:
    return lambda inst: inst.runtime_parameters.get(key) == expected


def has_timer(inst: Instance) -> bool:
    return bool(inst.timers)


def rows(engine: Dagger, table: str) -> int:
    """Row count of one of the store's tables (instances, correlation, timers, jobs...)."""
    store = engine.runtime.store
    if isinstance(store, RocksDBStore):
        return len(store.table(table))
    assert isinstance(store, SQLiteStore)
    return int(store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def index_entries(engine: Dagger, topic: str | None = None) -> list[tuple[str, str, str, str, str]]:
    store = engine.runtime.store
    if isinstance(store, RocksDBStore):
        return [e for e in store.table("correlation") if topic is None or e[0] == topic]  # type: ignore[misc]
    assert isinstance(store, SQLiteStore)
    if topic is None:
        cur = store.db.execute("SELECT topic, key, value, instance, node FROM correlation")
    else:
        cur = store.db.execute(
            "SELECT topic, key, value, instance, node FROM correlation WHERE topic=?", (topic,)
        )
    return [tuple(r) for r in cur]  # type: ignore[misc]


def decode(value: Any) -> Any:
    return json.loads(value.decode() if isinstance(value, bytes) else value)


class JsonKeyListener(KafkaListenerTask[str, str]):
    """Listener correlating on ``correlatable_key``; the payload is a JSON object whose
    field of that name is a value or a list of values (one message, many workflows)."""

    correlatable_key = "order_id"

    async def get_correlatable_keys_from_payload(self, payload: Any) -> list[TaskLookupKey]:
        data = decode(payload)
        value = data[self.correlatable_key]
        values = value if isinstance(value, list) else [value]
        return [(self.correlatable_key, v) for v in values]

    async def on_message(self, runtime_parameters: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        seen = runtime_parameters.setdefault("messages", [])
        seen.append(decode(args[0]))
        return True
