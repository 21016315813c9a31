"""Kept instance counts on the RocksDB store (mixed into ``RocksDBStore``; no rocksdict here).

====  ========================================================  ============================
tag   key fields                                                value
====  ========================================================  ============================
k     template, status                                          how many instances (u64)
====  ========================================================  ============================

Counting a listing range walks every key of it (about 300 ms for 100,000 instances, on every
console list page), so the store keeps one count per (template, status) instead and answers
a count of status and template only (``InstanceQuery.is_plain``) by summing a few of them.

Exact by construction: ``RocksDBStore.commit`` works out what each of its instances' (template,
status) changes and writes the new counts in the write batch of the records themselves, so a
count never disagrees with the records, whatever crashes. A changelog restore commits through
the same ``commit``, so a restored store keeps its counts as the processor does. The counts
also live in memory (the process is the only writer: ``store/lockfile.py``); they are read
once, on first use. A zero count is deleted.

A database of schema version 1 had no counts: opening it builds them from the ``r`` records
(one scan) and raises its schema to 2 in the same write, so that an older daggerflow, which
would commit without counting, refuses it instead of leaving its counts wrong.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Generator
from typing import Any

import msgspec

from .keys import U64, text_field, text_fields

log = logging.getLogger(__name__)
_unpack = msgspec.msgpack.Decoder()
COUNTS = b"k"
Counts = Counter[tuple[str, str]]  # (template, status) -> instances (or a change of them)


class RocksCounts:
    db: Any

    _counts: dict[tuple[str, str], int] | None = None

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def _build_counts(self, wb: Any) -> None:
        """Put the counts of every instance into ``wb`` (upgrading a database that has none)."""
        counts: Counts = Counter()
        for _, value in self._scan(b"r"):
            status, _created, template = _unpack.decode(value)
            counts[(template, status)] += 1
        for (template, status), n in counts.items():
            wb.put(COUNTS + text_field(template) + text_field(status), U64.pack(n))
        self._counts = None  # read back once the write is done

    def _kept_counts(self) -> dict[tuple[str, str], int]:
        if self._counts is None:
            counts: dict[tuple[str, str], int] = {}
            for key, value in self._scan(COUNTS):
                template, status = text_fields(key[1:])
                counts[(template, status)] = int(U64.unpack(value)[0])
            self._counts = counts
        return self._counts

    def _write_counts(self, wb: Any, changes: Counts) -> dict[tuple[str, str], int]:
        """Put the counts that ``changes`` moves into ``wb``; return them, for
        ``_counts_written`` once the batch is written (not before: a failed write changes
        nothing)."""
        kept = self._kept_counts()
        out: dict[tuple[str, str], int] = {}
        for (template, status), change in changes.items():
            if not change:
                continue
            n = kept.get((template, status), 0) + change
            if n < 0:
                # Only a store bug gets here; failing the commit would stop the processor on
                # every later batch of this template, so the count stops at zero instead.
                log.error("count of %s/%s would go below zero (%d): kept as 0", template, status, n)
                n = 0
            key = COUNTS + text_field(template) + text_field(status)
            if n:
                wb.put(key, U64.pack(n))
            else:
                wb.delete(key)
            out[(template, status)] = n
        return out

    def _counts_written(self, written: dict[tuple[str, str], int]) -> None:
        kept = self._kept_counts()
        for key, n in written.items():
            if n:
                kept[key] = n
            else:
                kept.pop(key, None)

    def count_instances(self, *, status: str | None, template: str | None) -> int:
        return sum(
            n
            for (t, s), n in self._kept_counts().items()
            if (status is None or s == status) and (template is None or t == template)
        )

    def status_counts(self) -> list[tuple[str, str, int]]:
        return sorted((t, s, n) for (t, s), n in self._kept_counts().items())
