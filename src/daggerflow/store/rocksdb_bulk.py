"""Bulk jobs on the RocksDB store (``model.bulk``): a partition's share of each job under
``u`` + job id, and the ids it has yet to act on under ``U`` + job id + seq, deleted in
the commit that acts on them. No rocksdict here: the store hands its database in."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..model.bulk import BulkShare, decode_share, encode_share
from .base import WriteBatch
from .keys import U64, text_field, u64


class RocksBulk:
    """Mixed into ``RocksDBStore``: the ``Store`` methods of bulk jobs."""

    db: Any

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def bulk_share(self, job: str) -> BulkShare | None:
        data = self.db.get(b"u" + text_field(job))
        return None if data is None else decode_share(data)

    def bulk_active(self) -> list[BulkShare]:
        shares = [decode_share(value) for _, value in self._scan(b"u")]
        active = [s for s in shares if s.finished is None]
        return sorted(active, key=lambda s: (s.spec.created, s.spec.id))

    def bulk_recent(self, limit: int) -> list[BulkShare]:
        shares = [decode_share(value) for _, value in self._scan(b"u")]
        return sorted(shares, key=lambda s: (s.spec.created, s.spec.id), reverse=True)[:limit]

    def bulk_items(self, job: str, limit: int) -> list[tuple[int, str]]:
        prefix = b"U" + text_field(job)
        out: list[tuple[int, str]] = []
        if limit <= 0:
            return out
        scan = self._scan(prefix)
        try:
            for key, value in scan:
                out.append((int(U64.unpack(key[-8:])[0]), value.decode()))
                if len(out) >= limit:
                    break
        finally:
            scan.close()
        return out

    @staticmethod
    def _write_bulk(wb: Any, batch: WriteBatch) -> None:
        """Add a batch's bulk rows to the RocksDB write batch ``wb`` (deletes first)."""
        for job, seq in batch.bulk_items_del:
            wb.delete(b"U" + text_field(job) + u64(seq))
        for job, seq, instance in batch.bulk_items_put:
            wb.put(b"U" + text_field(job) + u64(seq), instance.encode())
        for job, share in batch.bulk_shares.items():
            wb.put(b"u" + text_field(job), encode_share(share))
