"""Finding instances: the listings and counts of the facade (``Dagger`` inherits them).

Every call takes an ``InstanceQuery`` (``query=``, e.g. from ``query_from_pairs``) or the
same conditions as keywords: ``status``, ``template``, ``version``, ``params`` (runtime
parameters that must be equal, AND), ``waiting_on`` (a topic a listener waits on),
``correlation`` (a value a waiting listener is indexed under), ``created_after``,
``created_before``, ``updated_after`` (epoch seconds or ISO-8601 text) and ``sort``
(``-created``, the default, ``created``, ``-updated``, ``updated``). Keywords given override
the query's. Unknown or malformed conditions raise ``InvalidInput``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .model.instance import Instance
from .model.query import PARAM_PREFIX, InstanceQuery, query_from_pairs
from .pipeline.ports import Runtime


def build_query(
    query: InstanceQuery | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    **conditions: Any,
) -> InstanceQuery:
    """A query from a base query and keyword conditions (None: not given)."""
    pairs: list[tuple[str, Any]] = []
    if query is not None:
        pairs.extend((k, v) for k, v in query.to_filter().items())
    given = {k: v for k, v in conditions.items() if v is not None}
    pairs = [(k, v) for k, v in pairs if k not in given and not (params and k.startswith(PARAM_PREFIX)
                                                                  and k[len(PARAM_PREFIX):] in params)]  # fmt: skip
    pairs.extend(given.items())
    pairs.extend((PARAM_PREFIX + str(name), value) for name, value in (params or {}).items())
    return query_from_pairs(pairs)


class Search:
    _runtime: Callable[[], Runtime]

    def list_instances(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int = 100,
        offset: int = 0,
        **conditions: Any,
    ) -> list[Instance]:
        """One page of the instances this process holds (every instance when embedded) that
        meet the conditions, newest first unless ``sort`` says otherwise."""
        q = build_query(query, status=status, template=template, **conditions)
        return self._runtime().list_local(q, limit=limit, offset=offset)

    def count_instances(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None,
        **conditions: Any,
    ) -> int:  # fmt: skip
        return self._runtime().count_local(build_query(query, status=status, template=template, **conditions))

    async def list_instances_async(
        self,
        query: InstanceQuery | None = None,
        *,
        status: str | None = None,
        template: str | None = None,
        limit: int = 100,
        offset: int = 0,
        **conditions: Any,
    ) -> list[Instance]:
        """Like ``list_instances``, across every worker on Kafka (merged in the query's order)."""
        q = build_query(query, status=status, template=template, **conditions)
        return await self._runtime().list_all(q, limit=limit, offset=offset)

    async def count_instances_async(
        self, query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None,
        **conditions: Any,
    ) -> int:  # fmt: skip
        q = build_query(query, status=status, template=template, **conditions)
        return await self._runtime().count_all(q)
