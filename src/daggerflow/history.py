"""Reading an instance's history: a part of the facade (``Dagger`` inherits it). The
history is written by the pipeline with every applied event (``model.history``); on Kafka
the page is read from the worker that owns the instance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import InvalidInput, UnknownInstance
from .model.history import Page
from .model.ids import id_problem
from .pipeline.ports import Runtime

MAX_PAGE = 1000


class HistoryReads:
    _runtime: Callable[[], Runtime]

    async def history(self, instance_id: Any, *, limit: int = 100, after: int | None = None) -> Page:
        """A page of what happened to an instance, oldest first: ``items`` (``Entry``: seq,
        time, event kind, node, status changes, attempt, error, actor, matched message...)
        and ``next``, the ``after`` of the next page (None on the last); ``after=None``
        starts at the oldest. ``UnknownInstance`` if there is no such instance."""
        size, after = _paging(limit, after)
        iid = getattr(instance_id, "id", instance_id)
        page = None
        if id_problem(iid) is None:
            page = await self._runtime().history(str(iid), after=after, size=size)
        if page is None:
            raise UnknownInstance(f"no workflow instance {iid!r}")
        return page

    def local_history(self, instance_id: str, *, after: int | None = None, limit: int = 100) -> Page | None:
        """A page of the history of an instance this process holds (forwarded reads answer
        with it); on Kafka, ``NotOwner`` when this worker does not hold its partition now."""
        size, after = _paging(limit, after)
        return self._runtime().local_history(instance_id, after=after, size=size)


def _paging(limit: Any, after: Any) -> tuple[int, int]:
    if after is None:
        after = -1
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    if isinstance(after, bool) or not isinstance(after, int) or after < -1:
        raise InvalidInput(f"after must be an integer >= -1 (a seq of the history), got {after!r}")
    return limit, after
