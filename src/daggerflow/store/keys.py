"""Order-preserving binary key encoding, shared by the RocksDB store and the changelog.

A key is a one-byte table tag followed by its fields. A string field is its UTF-8 bytes
with every ``00`` byte escaped as ``00 FF``, followed by the separator ``00 01``: no field
is a prefix of another, and byte order is the strings' order. Integers are 8-byte
big-endian, floats 8 bytes in an order-preserving encoding, so byte order is numeric order.
"""

from __future__ import annotations

import functools
import struct

U64 = struct.Struct(">Q")
F64 = struct.Struct(">d")
SEP = b"\x00\x01"
_SIGN = 1 << 63
_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=1 << 16)
def text_field(text: str) -> bytes:
    """A string field: escaped UTF-8 plus the separator (cached: ids, node names and
    topics recur in every commit)."""
    raw = text.encode()
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", b"\x00\xff")
    return raw + SEP


def unescape(field: bytes) -> str:
    return field.replace(b"\x00\xff", b"\x00").decode()


def text_fields(data: bytes) -> list[str]:
    """Split a run of string fields (each ending with the separator)."""
    return [unescape(f) for f in data.split(SEP)[:-1]]


def u64(n: int) -> bytes:
    return U64.pack(n)


def f64(x: float) -> bytes:
    """An 8-byte float encoding whose byte order is numeric order."""
    n: int = U64.unpack(F64.pack(x))[0]
    return U64.pack((~n & _MASK) if n & _SIGN else n | _SIGN)
