"""Topic retention on the RocksDB store: what ``embedded.retention`` asks of a topic log.

Messages are the ``q`` keys, ``q`` + topic + big-endian offset, so a topic's messages are
one ordered key range and trimming its oldest ones is a range of deletes. Space comes back
as RocksDB compacts the range, on its own: ``release_space`` has nothing to do.
"""

from __future__ import annotations

from collections.abc import Generator

import msgspec
from rocksdict import Rdict, WriteOptions
from rocksdict import WriteBatch as RocksBatch

from .keys import U64, text_field, u64

_unpack = msgspec.msgpack.Decoder()


class RocksTopicRetention:
    """Mixed into ``RocksDBStore``: the ``TopicLog`` methods retention uses."""

    db: Rdict
    _write: WriteOptions

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def _messages(self, topic: str, start: int = 0) -> Generator[tuple[int, bytes], None, None]:
        """``(offset, packed message)`` of ``topic`` from ``start``, in order."""
        prefix = b"q" + text_field(topic)
        scan = self._scan(prefix, prefix + u64(max(0, start)))
        try:
            for key, value in scan:
                yield int(U64.unpack(key[-8:])[0]), value
        finally:
            scan.close()

    def first_offset(self, topic: str) -> int | None:
        """The oldest offset still stored in ``topic`` (None: the topic is empty)."""
        messages = self._messages(topic)
        try:
            return next((offset for offset, _ in messages), None)
        finally:
            messages.close()

    def first_offset_since(self, topic: str, ts: float, start: int) -> int | None:
        """The first offset from ``start`` whose message was appended at ``ts`` or later
        (messages are appended in time order: this reads only the older ones)."""
        messages = self._messages(topic, start)
        try:
            return next((offset for offset, value in messages if _unpack.decode(value)[3] >= ts), None)
        finally:
            messages.close()

    def trim(self, topic: str, start: int, end: int) -> int:
        """Delete the messages of ``topic`` at offsets ``start <= offset < end`` in one
        write; return how many. The caller never deletes the newest message, which carries
        the topic's next offset across restarts."""
        prefix = b"q" + text_field(topic)
        batch = RocksBatch(raw_mode=True)
        count = 0
        messages = self._messages(topic, start)
        try:
            for offset, _ in messages:
                if offset >= end:
                    break
                batch.delete(prefix + u64(offset))
                count += 1
        finally:
            messages.close()
        if count:
            self.db.write(batch, self._write)
        return count

    def release_space(self, max_pages: int) -> int:
        return 0  # RocksDB compacts deleted ranges by itself
