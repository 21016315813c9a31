"""The instances of a store that have not ended, read page by page (the operators' scans:
the versions listing, the start-up check and migrations; never the hot path)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..model.instance import Instance
from ..model.versions import RUNNING_STATUSES
from ..store.base import Store

PAGE = 500


def running_in(stores: Iterable[Store]) -> Iterator[Instance]:
    for store in stores:
        for status in RUNNING_STATUSES:
            offset = 0
            while True:
                page = store.list_instances(status=status, template=None, limit=PAGE, offset=offset)
                yield from page
                if len(page) < PAGE:
                    break
                offset += PAGE
