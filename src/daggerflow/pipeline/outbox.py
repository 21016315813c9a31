"""Capture of messages that user code sends while a task or agent runs.

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
