"""The history of an instance: what happened to it, one entry per applied event.

Pure data and functions: building an entry from an event and the status changes the
machine reports, folding a batch's entries into the instance's record, and reading a page.

Where entries live. An instance's newest entries ride in its own record, as the msgpack
body of an array (``Instance.history_tail``): they commit, changelog and restore with it at
no extra row. Once the tail holds ``FLUSH_ENTRIES`` entries or ``FLUSH_BYTES`` bytes it
becomes one store row ``(instance, first seq) -> msgpack array`` (``Flush``), listed in
``Instance.history_rows`` so that rows are deleted exactly (with the instance, or once
they hold only entries beyond ``history_limit``) without reading the store. A pizza
workflow thus writes no history row at all; a long-lived one writes one per ~32 entries.

Bounded: a read shows the newest ``history_limit`` entries, preceded by a marker entry
(``event="dropped"``) saying how many older ones were dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from .instance import Instance

FLUSH_ENTRIES = 32
FLUSH_BYTES = 4096
ERROR_CHARS = 200
#: How much of a sent message's value its history entry keeps (the console shows it), and
#: how many of a job's messages: the entry rides in the instance record.
SENT_CHARS = 200
SENT_MESSAGES = 5
DEFAULT_LIMIT = 100
DROPPED = "dropped"


class Entry(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, frozen=True):
    """One applied event. ``changes``: the (node, from, to) status changes it caused, in
    order. ``attempt``: the attempts of the event's node after it. ``offset`` (and
    ``partition`` on Kafka) of a delivery: the listener message that matched. ``actor``:
    who asked for a manual action. A marker (``event="dropped"``) has ``dropped``: how many
    older entries are gone. ``sent``: the messages a job sent through the engine (``done``,
    ``failed``), each (topic, key, size in bytes, the value's first ``SENT_CHARS``
    characters). Stored as an array: fields only ever get appended."""

    seq: int
    time: float
    event: str
    node: str | None = None
    changes: list[tuple[str, str, str]] = []
    job: str | None = None
    attempt: int | None = None
    error: str | None = None
    actor: str | None = None
    topic: str | None = None
    offset: int | None = None
    partition: int | None = None
    detail: str | None = None
    dropped: int = 0
    sent: list[tuple[str, str | None, int, str]] = []


class Page(msgspec.Struct, frozen=True):
    """One page of a history, oldest first; ``next``: the ``after`` of the next page."""

    items: list[Entry]
    next: int | None = None


class Flush(msgspec.Struct, frozen=True):
    """What folding a batch's entries asks of the store: a row to put, rows to delete."""

    put: tuple[int, bytes]
    delete: tuple[int, ...] = ()


#: An entry as built on the hot path: ``Entry``'s fields in order (trailing defaults left out).
Row = tuple[Any, ...]

_encoder = msgspec.msgpack.Encoder()
_rows = msgspec.msgpack.Decoder(list[Entry])
_one = msgspec.msgpack.Decoder(Entry)


def summary(error: str | None) -> str | None:
    """The first line of an error, at most ``ERROR_CHARS`` characters."""
    if not error:
        return None
    line = error.split("\n", 1)[0]
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


_KINDS: dict[type, str] = {}


def entry(seq: int, now: float, event: Any, inst: Instance, changes: list[tuple[str, str, str]]) -> Row:
    """The entry of ``event`` (a ``machine.events`` struct) applied to ``inst`` (its state
    after), which changed the statuses ``changes``: an ``Entry``'s fields, as a tuple (it is
    encoded as one; on the hot path, every applied event, a tuple costs less)."""
    cls = type(event)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = cls.__struct_config__.tag
    if kind == "done":
        node = inst.nodes.get(event.node)
        attempts = None if node is None else node.attempts
        if changes and changes[0][2] == "FAILURE":  # (a task's own failure is its first change)
            return (seq, now, kind, event.node, changes, event.job, attempts, _error_of(inst, changes))
        return (seq, now, kind, event.node, changes, event.job, attempts)
    if kind == "deliver":
        offset = event.offset
        partition = event.partition
        return (seq, now, kind, event.node, changes, None, None, None, None, event.topic or None,
                None if offset < 0 else offset, None if partition < 0 else partition)  # fmt: skip
    if kind == "create":
        if event.actor is None:
            return (seq, now, kind, None, changes)
        return (seq, now, kind, None, changes, None, None, None, event.actor)
    if kind == "failed":
        node = inst.nodes.get(event.node)
        return (seq, now, kind, event.node, changes, event.job, None if node is None else node.attempts,
                summary(event.error))  # fmt: skip
    if kind == "timer":
        node_id, _, purpose = event.key.partition(":")
        error = _error_of(inst, changes) if changes and changes[0][2] == "FAILURE" else None
        return (seq, now, kind, node_id, changes, None, None, error, None, None, None, None, purpose)
    detail = None
    if kind == "patch":
        detail = ",".join(sorted(event.changes))
    elif kind == "retry" and event.runtime_parameters:
        detail = ",".join(sorted(event.runtime_parameters))
    elif kind == "migrate":
        target = event.target.template_version
        detail = f"{event.from_version} -> {target}" if event.from_version else f"-> {target}"
    return (seq, now, kind, getattr(event, "node", None), changes, None, None, None, event.actor, None, None,
            None, detail)  # fmt: skip


def with_sent(row: Row, box: Iterable[Any]) -> Row:
    """A job's entry (``done``/``failed``) with the messages the job sent (``Outgoing``s)."""
    sent: list[tuple[str, str | None, int, str]] = []
    for out in box:
        if len(sent) == SENT_MESSAGES:
            break
        value = out.value
        if isinstance(value, bytes):
            size = len(value)
            text = value[: SENT_CHARS * 4].decode("utf-8", "replace")
        else:
            text = value if isinstance(value, str) else str(value)
            size = len(text.encode())
        sent.append((out.topic, out.key, size, text[:SENT_CHARS]))
    return (*row, *(None,) * (13 - len(row)), 0, sent)


def as_entry(row: Row) -> Entry:
    """A row of ``entry`` as the ``Entry`` it encodes (no-op status changes left out)."""
    return clean(_one.decode(_encoder.encode(row)))


def clean(e: Entry) -> Entry:
    """``e`` without no-op status changes (the machine reports every status it sets)."""
    if all(a != b for _, a, b in e.changes):
        return e
    return msgspec.structs.replace(e, changes=[c for c in e.changes if c[1] != c[2]])


def _error_of(inst: Instance, changes: list[tuple[str, str, str]]) -> str | None:
    failed = inst.nodes.get(changes[0][0])
    return None if failed is None else summary(failed.error)


_HEADERS = [bytes((0x90 | n,)) for n in range(16)]


def _header(count: int) -> bytes:
    if count < 16:
        return _HEADERS[count]
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def fold(inst: Instance, entries: list[Row], limit: int) -> Flush | None:
    """Add ``entries`` (numbered from ``inst.history_seq`` on) to the tail in ``inst``'s
    record, and move the tail to a row when it is full. Changes ``inst``."""
    n = len(entries)
    encoded = _encoder.encode(entries)
    inst.history_tail += memoryview(encoded)[1 if n < 16 else 3 if n < 1 << 16 else 5 :]
    inst.history_seq = seq = entries[-1][0] + 1
    count = seq - inst.history_flushed
    if count < FLUSH_ENTRIES and len(inst.history_tail) < FLUSH_BYTES:
        return None
    first = inst.history_flushed
    row = _header(count) + inst.history_tail
    rows = (*inst.history_rows, first)
    inst.history_flushed = seq
    inst.history_tail = b""
    # A row goes once its newest entry is beyond the limit (it ends where the next begins).
    cutoff = seq - limit
    keep = 0
    while keep < len(rows) - 1 and rows[keep + 1] <= cutoff:
        keep += 1
    inst.history_rows = rows[keep:]
    return Flush((first, row), rows[:keep])


def tail_entries(inst: Instance) -> list[Entry]:
    count = inst.history_seq - inst.history_flushed
    if count <= 0:
        return []
    return _rows.decode(_header(count) + inst.history_tail)


def read(inst: Instance, rows: Iterable[tuple[int, bytes]], limit: int, *, after: int = -1, size: int = 100) -> Page:
    """A page of ``inst``'s history: ``rows`` are its store rows (first seq, value); those
    its record does not list (a commit newer than ``inst``) are left out. The newest
    ``limit`` entries are shown, after the marker if older ones were dropped; the page holds
    at most ``size`` items with a seq above ``after``."""
    listed = set(inst.history_rows)
    entries: list[Entry] = []
    for first, data in sorted(rows):
        if first in listed:
            entries.extend(e for e in _rows.decode(data) if e.seq < inst.history_flushed)
    entries.extend(tail_entries(inst))
    cutoff = inst.history_seq - limit
    visible = [clean(e) for e in entries if e.seq >= cutoff]
    dropped = visible[0].seq if visible else inst.history_seq
    items: list[Entry] = []
    if dropped > 0:
        time = visible[0].time if visible else inst.lastupdated
        items.append(Entry(dropped - 1, time, DROPPED, dropped=dropped))
    items.extend(visible)
    page = [e for e in items if e.seq > after]
    more = len(page) > size
    page = page[:size]
    return Page(page, page[-1].seq if more else None)
