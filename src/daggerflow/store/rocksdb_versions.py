"""Template versions on the RocksDB store: each version's definition under ``v`` + template
+ version, with the time it was first seen. No rocksdict here: the store hands its database
and write options in."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import msgspec

from .keys import text_field, text_fields

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()


class RocksVersions:
    """Mixed into ``RocksDBStore``: the ``Store`` methods of template versions."""

    db: Any
    _write: Any

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Generator[tuple[bytes, bytes], None, None]:
        raise NotImplementedError  # RocksDBStore's

    def save_template_version(self, template: str, version: str, definition: bytes, ts: float) -> None:
        """Keep a template version's definition (the first time it is seen)."""
        key = b"v" + text_field(template) + text_field(version)
        if self.db.get(key) is None:
            self.db.put(key, _pack.encode((definition, ts)), self._write)

    def template_versions(self) -> list[tuple[str, str, bytes, float]]:
        out: list[tuple[str, str, bytes, float]] = []
        for key, value in self._scan(b"v"):
            template, version = text_fields(key[1:])
            definition, ts = _unpack.decode(value)
            out.append((template, version, bytes(definition), float(ts)))
        return sorted(out, key=lambda row: row[3])
