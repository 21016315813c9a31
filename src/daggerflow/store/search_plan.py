"""How a store answers an instance query from its indexes (no I/O here: the stores run it).

A store indexes, besides status, template and times:

- the **search rows** of each instance (``model.query.search_rows``): its declared search
  attributes and its listeners' correlatable keys, as (name, value) pairs;
- the **search profiles**: which (template, search keys) the store holds instances of. A
  ``param.NAME`` filter is answered from the search rows alone when every instance that
  could match indexes NAME (every profile of the templates in question has it); instances
  of a template some of whose instances do not index NAME are read and checked instead,
  bounded by the other conditions: what an undeclared parameter costs;
- the correlation index (waiting listeners: topic, key, value).

Every plan yields a superset of the matches in the query's order; the store checks each
candidate with ``model.query.matches`` unless the plan says its conditions are ``exact``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..model.query import InstanceQuery

Profiles = Mapping[str, Iterable[tuple[str, ...]]]


@dataclass
class ParamPlan:
    """How one ``param.NAME=VALUE`` condition is served."""

    name: str
    value: str
    # Templates (of those the query can match) with instances that do not index the name:
    # their instances are candidates too, checked one by one.
    unindexed: list[str] = field(default_factory=list)
    # No template in question indexes the name: the condition is checked on the candidates
    # the other conditions select.
    scan_only: bool = False


def param_plans(query: InstanceQuery, profiles: Profiles) -> list[ParamPlan]:
    """The plan of each parameter condition, given the store's search profiles."""
    templates = [query.template] if query.template is not None else sorted(profiles)
    out = []
    for name, value in query.params:
        indexed, unindexed = [], []
        for template in templates:
            kinds = list(profiles.get(template, ()))
            if any(name not in keys for keys in kinds):
                unindexed.append(template)
            if any(name in keys for keys in kinds):
                indexed.append(template)
        out.append(ParamPlan(name, value, unindexed, scan_only=bool(unindexed) and not indexed))
    return out


@dataclass
class SqlPlan:
    """A query as SQL over ``instances i`` (``where`` and ``order`` clauses with their
    arguments); ``exact`` when the rows it selects are exactly the matches."""

    where: str
    args: list[object]
    order: str
    exact: bool


_ORDER = {
    "-created": " ORDER BY i.created DESC, i.id DESC",
    "created": " ORDER BY i.created, i.id",
    "-updated": " ORDER BY i.updated DESC, i.id DESC",
    "updated": " ORDER BY i.updated, i.id",
}


def sql_plan(query: InstanceQuery, profiles: Profiles, *, correlations: bool = True) -> SqlPlan:
    """The SQLite store's plan. ``correlations``: the store's correlation table indexes the
    waiting listeners of its own instances (one partition owns every entry: embedded)."""
    clauses: list[str] = []
    args: list[object] = []
    exact = query.version is None
    if query.status is not None:
        clauses.append("i.status = ?")
        args.append(query.status)
    if query.template is not None:
        clauses.append("i.template = ?")
        args.append(query.template)
    if query.created_after is not None:
        clauses.append("i.created >= ?")
        args.append(query.created_after)
    if query.created_before is not None:
        clauses.append("i.created < ?")
        args.append(query.created_before)
    if query.updated_after is not None:
        clauses.append("i.updated >= ?")
        args.append(query.updated_after)
    for plan in param_plans(query, profiles):
        if plan.scan_only:
            exact = False
            continue
        indexed = "i.id IN (SELECT s.instance FROM search s WHERE s.name = ? AND s.value = ?)"
        if plan.unindexed:
            exact = False
            marks = ", ".join("?" * len(plan.unindexed))
            clauses.append(f"({indexed} OR i.template IN ({marks}))")
            args.extend((plan.name, plan.value, *plan.unindexed))
        else:
            clauses.append(indexed)
            args.extend((plan.name, plan.value))
    if query.waiting_on is not None or query.correlation is not None:
        # Entries of nodes that stopped waiting are pruned lazily: always checked.
        exact = False
        if correlations:
            if query.waiting_on is not None:
                clauses.append("i.id IN (SELECT c.instance FROM correlation c WHERE c.topic = ?)")
                args.append(query.waiting_on)
            if query.correlation is not None:
                clauses.append("i.id IN (SELECT c.instance FROM correlation c WHERE c.value = ?)")
                args.append(query.correlation)
        else:
            clauses.append("i.status IN ('NOT_STARTED', 'SUBMITTED', 'EXECUTING')")  # waiting: not ended
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return SqlPlan(where, args, _ORDER[query.sort], exact)
