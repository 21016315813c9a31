"""Capture of messages that user code sends while a task or agent runs, and their size check.

While a job runs, ``topic.send()`` appends to the job's outbox instead of the log; the
outbox is committed together with the event that records the job's outcome, so a crash
before that commit publishes nothing and a commit publishes exactly once (design §2).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from ..model.records import Outgoing

_current: contextvars.ContextVar[list[Outgoing] | None] = contextvars.ContextVar(
    "daggerflow_outbox", default=None
)


def current_outbox() -> list[Outgoing] | None:
    return _current.get()


@contextmanager
def capture() -> Iterator[list[Outgoing]]:
    box: list[Outgoing] = []
    token = _current.set(box)
    try:
        yield box
    finally:
        _current.reset(token)


def message_size(value: str | bytes) -> int:
    """The size in bytes of a message value as stored and sent (str: its UTF-8)."""
    if isinstance(value, str):
        # A str of n characters is n to 4n bytes: encode only when the bound is not enough.
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    return len(value)


def oversize_message(box: list[Outgoing], limit: int) -> str | None:
    """Why a job's messages cannot be sent (one over ``limit``), or None."""
    for out in box:
        size = message_size(out.value)
        if size > limit:
            return (
                f"TooLarge: the message value for topic {out.topic!r} is {size} bytes, "
                f"over the limit of {limit} bytes (max_message_bytes)"
            )
    return None
