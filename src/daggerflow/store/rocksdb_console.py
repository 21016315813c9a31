"""The web console's reads on the RocksDB store (mixed into ``RocksDBStore``; no rocksdict
here: the store's database and scans are used).

The counts are the store's kept ones (``status_counts``: ``store/rocksdb_counts.py``); the
instances that may have an open listener or a pending timer are found through the ``X``
(instance-first correlation) and ``T`` (timer) ranges, so that a store of a million ended
instances reads only those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..model.instance import Instance, decode_instance
from ..model.versions import RUNNING_STATUSES
from .keys import SEP, text_field, unescape

_PAGE = 500


class RocksConsole:
    db: Any
    local_correlations: bool

    def _keys(self, prefix: bytes, limit: int | None = None, skip: int = 0) -> list[bytes]:
        raise NotImplementedError  # RocksDBStore's

    def waiting_instances(self) -> Iterator[Instance]:
        """Every instance with an open listener or a pending timer (and, where the correlation
        index holds other partitions' entries, every instance that has not ended)."""
        ids: set[str] = set()
        if self.local_correlations:
            for prefix in (b"X", b"T"):
                ids.update(unescape(key[1:].split(SEP, 1)[0]) for key in self._keys(prefix))
        else:
            for status in RUNNING_STATUSES:
                prefix = b"s" + text_field(status)
                cut = len(prefix) + 8  # the created time, then the id
                ids.update(unescape(key[cut:].split(SEP, 1)[0]) for key in self._keys(prefix))
        ordered = sorted(ids)
        for start in range(0, len(ordered), _PAGE):
            keys = [b"i" + text_field(i) for i in ordered[start : start + _PAGE]]
            for data in self.db.get(keys) or []:
                if data is not None:
                    yield decode_instance(data)
