"""Queries answered by reading instances: the meaning of ``model.query.matches`` applied to
what a store's status/template listing returns. Stores answer the conditions they index
themselves and fall back to this for the rest."""

from __future__ import annotations

from typing import Protocol

from ..model.instance import Instance
from ..model.query import InstanceQuery, matches, sort_key

PAGE = 1000


class Listing(Protocol):
    def list_instances(
        self, *, status: str | None, template: str | None, limit: int, offset: int
    ) -> list[Instance]: ...


def scan(store: Listing, query: InstanceQuery) -> list[Instance]:
    """Every instance of ``store`` that meets ``query``, in the query's order."""
    found: list[Instance] = []
    offset = 0
    while True:
        page = store.list_instances(status=query.status, template=query.template, limit=PAGE, offset=offset)
        found.extend(inst for inst in page if matches(inst, query))
        if len(page) < PAGE:
            break
        offset += PAGE
    key, reverse = sort_key(query)
    found.sort(key=key, reverse=reverse)
    return found
