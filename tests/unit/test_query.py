"""The meaning of an instance query: parsing from every spelling, and ``matches``."""

from __future__ import annotations

import pytest

from daggerflow.errors import InvalidFilter, InvalidInput
from daggerflow.model.instance import Correlation, Instance, Node
from daggerflow.model.query import InstanceQuery, matches, query_from_filter, query_from_pairs, sort_key


def _instance(iid: str, *, status: str = "EXECUTING", created: float = 100.0, updated: float = 100.0,
              params: dict[str, object] | None = None, waits: dict[str, Correlation] | None = None) -> Instance:
    root = Node(id=iid, name="w", kind="workflow", status=status, time_created=created)
    return Instance(id=iid, template_name="pizza", template_version="v1", nodes={iid: root},
                    runtime_parameters=dict(params or {}), lastupdated=updated,
                    correlations=dict(waits or {}))


def test_pairs_parse_every_filter() -> None:
    q = query_from_pairs([
        ("status", "failure"), ("template", "pizza"), ("version", "v1"), ("param.order_id", "7"),
        ("param.customer", "ann"), ("waiting_on", "ready"), ("correlation", "o-7"),
        ("created_after", "2026-01-01T00:00:00"), ("created_before", "1800000000"),
        ("updated_after", "10.5"), ("sort", "-updated"), ("limit", "5"),
    ], allow=("limit",))
    assert q.status == "FAILURE"
    assert q.params == (("customer", "ann"), ("order_id", "7"))
    assert q.created_after == 1767225600.0
    assert q.created_before == 1800000000.0 and q.updated_after == 10.5
    assert q.sort == "-updated" and not q.is_plain()
    assert query_from_filter(q.to_filter()) == q


@pytest.mark.parametrize(("pairs", "message"), [
    ([("colour", "red")], "unknown filter colour"),
    ([("param.", "x")], "needs a name"),
    ([("status", "A"), ("status", "B")], "given twice"),
    ([("sort", "name")], "sort must be one of"),
    ([("created_after", "yesterday")], "ISO-8601"),
    ([("created_after", "nan")], "finite"),
    ([("template", "")], "non-empty"),
    ([("status", "done")], "unknown status 'DONE'"),
])
def test_bad_filters_are_named(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(InvalidFilter, match=message) as caught:
        query_from_pairs(pairs)
    assert isinstance(caught.value, InvalidInput) and caught.value.filter == pairs[0][0]


def test_filter_values_keep_their_json_meaning() -> None:
    q = query_from_filter({"param.count": 3, "param.vip": True})
    assert q.params == (("count", "3"), ("vip", "true"))
    assert matches(_instance("a", params={"count": 3, "vip": True}), q)
    assert not matches(_instance("b", params={"count": "3 ", "vip": True}), q)
    with pytest.raises(InvalidInput, match="JSON object"):
        query_from_filter(["status"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="string, number or boolean"):
        query_from_filter({"param.x": {"a": 1}})


def test_matches_every_condition() -> None:
    wait = {"n1": Correlation("ready", "order_id", "o-7")}
    inst = _instance("a", status="EXECUTING", created=100, updated=200, params={"order_id": "o-7"}, waits=wait)
    assert matches(inst, InstanceQuery())
    assert matches(inst, InstanceQuery(status="EXECUTING", template="pizza", version="v1",
                                       params=(("order_id", "o-7"),), waiting_on="ready",
                                       correlation="o-7", created_after=100, created_before=101,
                                       updated_after=200))
    for miss in (InstanceQuery(status="FAILED"), InstanceQuery(template="x"), InstanceQuery(version="v2"),
                 InstanceQuery(params=(("order_id", "o-8"),)), InstanceQuery(params=(("other", "o-7"),)),
                 InstanceQuery(waiting_on="done"), InstanceQuery(correlation="o-8"),
                 InstanceQuery(created_after=100.5), InstanceQuery(created_before=100),
                 InstanceQuery(updated_after=200.5)):
        assert not matches(inst, miss), miss


def test_sort_orders_newest_first_by_default() -> None:
    items = [_instance("a", created=1, updated=9), _instance("b", created=2, updated=8)]
    key, reverse = sort_key(InstanceQuery())
    assert [i.id for i in sorted(items, key=key, reverse=reverse)] == ["b", "a"]
    key, reverse = sort_key(InstanceQuery(sort="updated"))
    assert [i.id for i in sorted(items, key=key, reverse=reverse)] == ["b", "a"]
    key, reverse = sort_key(InstanceQuery(sort="created"))
    assert [i.id for i in sorted(items, key=key, reverse=reverse)] == ["a", "b"]
