"""Trace and span ids derived from what they describe, and the W3C ``traceparent`` text.

A span that describes a step of an instance gets the id ``span_id(instance, node, attempt)``
whoever emits it: the worker that re-runs a step after a crash, or takes the partition over,
emits the same span again rather than a second one, and a child can name its parent before
the parent is emitted (the ``instance`` span is emitted last, when the instance ends).

The OpenTelemetry API has no way to give a span its id: ids come from the SDK's
``IdGenerator``. ``SeededIds`` wraps the provider's generator (``install``) so that the
next span gets the id the engine seeds, and every other span a random one as before.
"""

from __future__ import annotations

import hashlib
from typing import Any


def _digest(parts: tuple[object, ...], size: int) -> int:
    text = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    value = int.from_bytes(hashlib.blake2b(text, digest_size=size, person=b"daggerflow").digest(), "big")
    return value or 1  # 0 is the invalid id


def span_id(*parts: object) -> int:
    """A 64-bit span id for what ``parts`` name (instance id, node id, attempt, ...)."""
    return _digest(parts, 8)


def trace_id(*parts: object) -> int:
    """A 128-bit trace id for what ``parts`` name (an instance that starts its own trace)."""
    return _digest(parts, 16)


def traceparent(trace: int, span: int, flags: int) -> str:
    return f"00-{trace:032x}-{span:016x}-{flags & 0xFF:02x}"


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C ``traceparent``, or None if it is not one."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2 or parts[0] == "ff":
        return None
    try:
        trace, span, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if trace == 0 or span == 0:
        return None
    return trace, span, flags


class SeededIds:
    """An SDK ``IdGenerator`` (duck-typed: no SDK import) that hands out the seeded ids once,
    and otherwise asks the generator it wraps."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.next_span = 0
        self.next_trace = 0

    def generate_span_id(self) -> int:
        seeded, self.next_span = self.next_span, 0
        return seeded or int(self.fallback.generate_span_id())

    def generate_trace_id(self) -> int:
        seeded, self.next_trace = self.next_trace, 0
        return seeded or int(self.fallback.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        return False  # some trace ids are derived (W3C "random" flag)


def install(provider: Any) -> SeededIds | None:
    """Make ``provider`` (an SDK ``TracerProvider``) give the engine's spans their derived
    ids; None if it has no id generator to wrap (then spans get the provider's ids)."""
    current = getattr(provider, "id_generator", None)
    if current is None:
        return None
    if isinstance(current, SeededIds):
        return current
    seeded = SeededIds(current)
    provider.id_generator = seeded
    return seeded


__all__ = ["SeededIds", "install", "parse_traceparent", "span_id", "trace_id", "traceparent"]
