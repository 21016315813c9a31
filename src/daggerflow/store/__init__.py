"""State stores. The embedded runtime keeps everything in one SQLite database."""

from .base import Message, Store, WriteBatch
from .sqlite import SQLiteStore, open_store

__all__ = ["Message", "SQLiteStore", "Store", "WriteBatch", "open_store"]
