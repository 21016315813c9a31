"""State stores: one SQLite database (default), or RocksDB with the ``rocksdb`` extra
(``daggerflow.store.rocksdb``, imported only when a ``rocksdb://`` store is opened)."""

from .base import Message, Store, WriteBatch
from .factory import open_store
from .sqlite import SQLiteStore

__all__ = ["Message", "SQLiteStore", "Store", "WriteBatch", "open_store"]
