"""The SQLite store's WAL checkpoints, from a thread of their own: done inside a commit, a
checkpoint would stall the processor for milliseconds every ~1,000 pages."""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("daggerflow.store.sqlite")


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every ``interval``
    seconds. PASSIVE never blocks the writer, and sqlite3 releases the GIL while it copies
    pages. Once a checkpoint has caught up, the writer reuses the WAL from its start, so
    the file stops growing."""

    def __init__(self, path: str, interval: float = 0.5) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daggerflow-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    log.debug("checkpoint of %s deferred", self._path, exc_info=True)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
