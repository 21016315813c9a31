"""What an instance search asks for: one value shared by the listings, bulk actions and
migrations, whatever the caller spelled it in (REST query string, JSON filter, CLI options).

Plain data and pure functions: the stores turn a query into index lookups; ``matches`` is
the reference meaning every store must agree with (and what a store checks the conditions
it has no index for with).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..errors import InvalidFilter
from .instance import Instance
from .status import TaskStatusEnum

# The orders a listing can come in: a field, newest (or last updated) first with "-".
SORTS = ("-created", "created", "-updated", "updated")
DEFAULT_SORT = "-created"

# The filter names besides ``param.NAME``; ``sort`` is accepted where the caller lists.
FILTER_NAMES = (
    "status",
    "template",
    "version",
    "waiting_on",
    "correlation",
    "created_after",
    "created_before",
    "updated_after",
)
PARAM_PREFIX = "param."
_STATUSES = tuple(s.value for s in TaskStatusEnum)


class InstanceQuery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Conditions an instance must meet, all of them (AND), and the order of the results.

    ``params`` holds (name, value) pairs compared with ``param_text`` of the instance's
    runtime parameter; ``waiting_on`` is a topic some listener of the instance waits on;
    ``correlation`` a value some waiting listener is indexed under. Times are epoch seconds:
    ``created_after``/``updated_after`` are inclusive lower bounds, ``created_before`` an
    exclusive upper bound.
    """

    status: str | None = None
    template: str | None = None
    version: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    waiting_on: str | None = None
    correlation: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    updated_after: float | None = None
    sort: str = DEFAULT_SORT

    def is_plain(self) -> bool:
        """Only status and template (or nothing): what the stores' own listing indexes serve."""
        return not (
            self.version
            or self.params
            or self.waiting_on
            or self.correlation
            or self.created_after is not None
            or self.created_before is not None
            or self.updated_after is not None
        )

    def to_filter(self) -> dict[str, Any]:
        """The query as a JSON filter object (``query_from_filter`` reads it back)."""
        out: dict[str, Any] = {}
        for name in FILTER_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name, value in self.params:
            out[PARAM_PREFIX + name] = value
        if self.sort != DEFAULT_SORT:
            out["sort"] = self.sort
        return out


def param_text(value: Any) -> str:
    """A runtime parameter as a filter compares it: strings as they are, anything else as
    its JSON text (``param.count=3`` finds 3, ``param.vip=true`` finds True)."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def params_match(params: Mapping[str, Any], query: InstanceQuery) -> bool:
    """Whether runtime parameters meet the query's ``param.NAME`` conditions."""
    for name, text in query.params:
        if name not in params or param_text(params[name]) != text:
            return False
    return True


def search_names(instance: Instance) -> tuple[str, ...]:
    """The runtime parameters an instance is indexed by: those its template declared
    (``search_keys``), then its listeners' correlatable keys (Dagger's business keys)."""
    keys: list[str] = [n.correlatable_key for n in instance.nodes.values() if n.correlatable_key]
    if not instance.search_keys and len(keys) < 2:
        return tuple(keys)
    return tuple(dict.fromkeys([*instance.search_keys, *keys]))


def search_rows(instance: Instance | None, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The search index rows of an instance: each of its ``search_names`` that it has as a
    scalar parameter (a string, number or boolean), as ``param_text``. A filter on such a
    parameter is answered from the index; objects and lists are never equal to a filter.
    ``names``: the instance's ``search_names``, if the caller has them."""
    if instance is None:
        return {}
    params = instance.runtime_parameters
    out: dict[str, str] = {}
    for name in search_names(instance) if names is None else names:
        value = params.get(name)
        if isinstance(value, str | int | float):  # (bool is an int)
            out[name] = param_text(value)
    return out


def parse_time(name: str, text: str | float | int) -> float:
    """Epoch seconds, or an ISO-8601 time (a time without a zone is UTC)."""
    if isinstance(text, bool):
        raise InvalidFilter(f"{name} must be epoch seconds or an ISO-8601 time, not {text!r}", name)
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        try:
            seconds = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidFilter(
                    f"{name} must be epoch seconds or an ISO-8601 time, not {text!r}", name
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    if not math.isfinite(seconds):
        raise InvalidFilter(f"{name} must be a finite time, not {text!r}", name)
    return seconds


def query_from_pairs(pairs: Iterable[tuple[str, Any]], *, allow: Iterable[str] = ()) -> InstanceQuery:
    """A query from (name, value) pairs: a URL's query string, a CLI's ``--filter`` options
    or a JSON filter's items. Names outside the filters (and ``allow``, e.g. paging) raise
    ``InvalidFilter`` naming them; a repeated filter other than ``param.NAME`` too."""
    allowed = set(allow)
    fields: dict[str, Any] = {}
    params: dict[str, str] = {}
    unknown: list[str] = []
    for name, raw in pairs:
        if name in allowed:
            continue
        if name.startswith(PARAM_PREFIX):
            key = name[len(PARAM_PREFIX) :]
            if not key:
                raise InvalidFilter("a parameter filter needs a name: param.NAME=VALUE", name)
            if isinstance(raw, dict | list) or raw is None:
                raise InvalidFilter(f"{name} must be a string, number or boolean", name)
            if key in params:
                raise InvalidFilter(f"{name} is given twice", name)
            params[key] = param_text(raw)
            continue
        if name == "sort":
            if raw not in SORTS:
                raise InvalidFilter(f"sort must be one of {', '.join(SORTS)}, not {raw!r}", "sort")
            fields["sort"] = raw
            continue
        if name not in FILTER_NAMES:
            unknown.append(name)
            continue
        if name in fields:
            raise InvalidFilter(f"{name} is given twice", name)
        if name.endswith(("_after", "_before")):
            fields[name] = parse_time(name, raw)
        elif not isinstance(raw, str) or not raw:
            raise InvalidFilter(f"{name} must be a non-empty string", name)
        else:
            fields[name] = raw
    if unknown:
        known = ", ".join((*FILTER_NAMES, "param.NAME", "sort", *sorted(allowed)))
        named = ", ".join(sorted(unknown))
        raise InvalidFilter(f"unknown filter {named}; known: {known}", named)
    if "status" in fields:
        fields["status"] = fields["status"].upper()
        if fields["status"] not in _STATUSES:
            raise InvalidFilter(f"unknown status {fields['status']!r}; one of {', '.join(_STATUSES)}", "status")
    return InstanceQuery(params=tuple(sorted(params.items())), **fields)


def query_from_filter(filter: Mapping[str, Any] | None) -> InstanceQuery:
    """A query from a JSON filter object (bulk actions, migrations)."""
    if filter is None:
        return InstanceQuery()
    if not isinstance(filter, Mapping):
        raise InvalidFilter("filter must be a JSON object")
    return query_from_pairs(filter.items())


def listing_query(
    query: InstanceQuery | None = None, *, status: str | None = None, template: str | None = None
) -> InstanceQuery:
    """The query of a listing call that may also spell status and template as keywords
    (the calls before queries existed): those given override the query's."""
    if query is None:
        return InstanceQuery(status=status, template=template)
    changes = {k: v for k, v in (("status", status), ("template", template)) if v is not None}
    return msgspec.structs.replace(query, **changes) if changes else query


def matches(instance: Instance, query: InstanceQuery) -> bool:
    """Whether ``instance`` meets every condition of ``query`` (the meaning stores follow)."""
    root = instance.root
    if query.status is not None and root.status != query.status:
        return False
    if query.template is not None and instance.template_name != query.template:
        return False
    if query.version is not None and instance.template_version != query.version:
        return False
    if query.created_after is not None and root.time_created < query.created_after:
        return False
    if query.created_before is not None and root.time_created >= query.created_before:
        return False
    if query.updated_after is not None and instance.lastupdated < query.updated_after:
        return False
    if query.params and not params_match(instance.runtime_parameters, query):
        return False
    if query.waiting_on is not None or query.correlation is not None:
        waits = instance.correlations.values()
        if query.waiting_on is not None and not any(c.topic == query.waiting_on for c in waits):
            return False
        if query.correlation is not None and not any(c.value == query.correlation for c in waits):
            return False
    return True


def sort_key(query: InstanceQuery) -> tuple[Any, bool]:
    """The key function and ``reverse`` flag that put instances in the query's order
    (ties broken by id, in the same direction)."""
    if query.sort.endswith("updated"):
        key: Any = _by_updated
    else:
        key = _by_created
    return key, query.sort.startswith("-")


def _by_created(instance: Instance) -> tuple[float, str]:
    return instance.root.time_created, instance.id


def _by_updated(instance: Instance) -> tuple[float, str]:
    return instance.lastupdated, instance.id

