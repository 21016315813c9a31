"""Instance history rows on the RocksDB store (``model.history``): under ``h`` + instance +
first seq (u64), written and deleted in the instance's batch. No rocksdict here: the store
hands its database and write batch in."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .base import WriteBatch
from .keys import U64, text_field, u64


class RocksHistory:
    """Mixed into ``RocksDBStore``: the ``Store`` methods of history rows."""

    db: Any

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def history_rows(self, instance_id: str) -> list[tuple[int, bytes]]:
        prefix = b"h" + text_field(instance_id)
        return [(int(U64.unpack(key[-8:])[0]), bytes(value)) for key, value in self._scan(prefix)]

    def _write_history(self, wb: Any, batch: WriteBatch) -> None:
        for instance, seq in batch.history_del:
            wb.delete(b"h" + text_field(instance) + u64(seq))
        for instance, seq, data in batch.history_put:
            wb.put(b"h" + text_field(instance) + u64(seq), data)
