"""Schedules on the RocksDB store (``model.schedule``): one entry per schedule under ``S`` +
name. No rocksdict here: the store hands its database and write batch in."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..model.schedule import Schedule, decode_schedule, encode_schedule
from .base import WriteBatch
from .keys import text_field


class RocksSchedules:
    """Mixed into ``RocksDBStore``: the ``Store`` methods of schedules."""

    db: Any

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def get_schedule(self, name: str) -> Schedule | None:
        data = self.db.get(b"S" + text_field(name))
        return None if data is None else decode_schedule(data)

    def list_schedules(self) -> list[Schedule]:
        return [decode_schedule(value) for _, value in self._scan(b"S")]

    def _write_schedules(self, wb: Any, batch: WriteBatch) -> None:
        for name, schedule in batch.schedules.items():
            if schedule is None:
                wb.delete(b"S" + text_field(name))
            else:
                wb.put(b"S" + text_field(name), encode_schedule(schedule))
