"""Diagnostics on the RocksDB store (mixed into ``RocksDBStore``; no rocksdict here): its
ranges as the rows of the SQLite store's tables, for tests and debugging (never on a hot path).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import msgspec

from .keys import F64, U64, text_fields, unescape

_unpack = msgspec.msgpack.Decoder()


class RocksTables:
    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def _keys(self, prefix: bytes, limit: int | None = None, skip: int = 0) -> list[bytes]:
        raise NotImplementedError  # RocksDBStore's

    def table(self, name: str) -> list[tuple[Any, ...]]:
        """Diagnostics: the rows of the SQLite store's table ``name`` (instances: id,
        template, status; correlation: topic, key, value, instance, node; timers: instance,
        key, due; jobs: instance, node, seq, job; positions: consumer, offset; seen: topic,
        id, ts; buffered: id, topic, key, value, expires; messages: topic, offset)."""
        out: list[tuple[Any, ...]] = []
        if name == "instances":
            for key, value in self._scan(b"r"):
                status, _, template = _unpack.decode(value)
                out.append((text_fields(key[1:])[0], template, status))
        elif name == "correlation":
            out = [tuple(text_fields(key[1:])) for key in self._keys(b"x")]
        elif name == "timers":
            out = [(*text_fields(key[1:]), F64.unpack(value)[0]) for key, value in self._scan(b"T")]
        elif name == "jobs":
            for key, value in self._scan(b"j"):
                out.append((*text_fields(key[1:-8]), U64.unpack(key[-8:])[0], _unpack.decode(value)[0]))
        elif name == "positions":
            out = [(text_fields(key[1:])[0], U64.unpack(value)[0]) for key, value in self._scan(b"p")]
        elif name == "seen":
            out = [(*text_fields(key[1:]), F64.unpack(value)[0]) for key, value in self._scan(b"n")]
        elif name == "buffered":
            for key, value in self._scan(b"B"):
                topic, name_, text = text_fields(key[1:-8])
                out.append((U64.unpack(key[-8:])[0], topic, name_, text, _unpack.decode(value)[1]))
            out.sort()
        elif name == "messages":
            out = [(unescape(key[1:-10]), U64.unpack(key[-8:])[0]) for key in self._keys(b"q")]
        else:
            raise ValueError(f"no table {name!r}")
        return out
