"""The pure parts of search: what an instance is indexed by, and how a query is planned."""

from __future__ import annotations

import pytest

from daggerflow import DAGBuilderHelper, ExecutorTask
from daggerflow.errors import TaskInvalidState
from daggerflow.model.instance import Instance, Node
from daggerflow.model.query import InstanceQuery, listing_query, query_from_pairs, search_names, search_rows
from daggerflow.model.template import check_search_attributes
from daggerflow.store.search_plan import param_plans, sql_plan


def _instance(keys: tuple[str, ...] = (), listener_key: str | None = None, **params: object) -> Instance:
    nodes = {"w": Node(id="w", name="w", kind="ROOT")}
    if listener_key:
        nodes["l"] = Node(id="l", name="w.l", kind="LISTENER", correlatable_key=listener_key)
    return Instance(id="w", template_name="t", template_version="v", nodes=nodes,
                    runtime_parameters=dict(params), search_keys=keys)  # fmt: skip


def test_names_are_declared_then_correlatable_keys_once() -> None:
    assert search_names(_instance()) == ()
    assert search_names(_instance(listener_key="order_id")) == ("order_id",)
    assert search_names(_instance(("customer", "order_id"), "order_id")) == ("customer", "order_id")


def test_rows_hold_scalars_as_filter_text() -> None:
    inst = _instance(("a", "b", "c", "d", "e"), "f", a="x", b=3, c=True, d={"no": 1}, f=None)
    assert search_rows(inst) == {"a": "x", "b": "3", "c": "true"}
    assert search_rows(None) == {}


def test_param_plans_follow_the_profiles() -> None:
    profiles = {"orders": [("order_id",)], "legacy": [()], "mixed": [("order_id",), ()]}
    q = query_from_pairs([("param.order_id", "7")])
    [plan] = param_plans(q, profiles)
    assert plan.unindexed == ["legacy", "mixed"] and not plan.scan_only
    [plan] = param_plans(query_from_pairs([("param.order_id", "7"), ("template", "orders")]), profiles)
    assert plan.unindexed == [] and not plan.scan_only
    [plan] = param_plans(query_from_pairs([("param.colour", "red")]), profiles)
    assert plan.scan_only


def test_sql_plan_is_exact_only_when_sql_answers_everything() -> None:
    profiles = {"orders": [("order_id",)]}
    assert sql_plan(query_from_pairs([("param.order_id", "7"), ("status", "FAILURE")]), profiles).exact
    assert not sql_plan(query_from_pairs([("version", "v1")]), profiles).exact
    assert not sql_plan(query_from_pairs([("param.colour", "red")]), profiles).exact
    assert not sql_plan(query_from_pairs([("waiting_on", "ready")]), profiles).exact
    running = sql_plan(query_from_pairs([("waiting_on", "ready")]), profiles, correlations=False)
    assert "correlation" not in running.where and "EXECUTING" in running.where
    assert sql_plan(InstanceQuery(), profiles).order == " ORDER BY i.created DESC, i.id DESC"


def test_listing_query_lets_keywords_override() -> None:
    base = InstanceQuery(status="FAILURE", params=(("a", "1"),))
    assert listing_query(base, template="t") == InstanceQuery(status="FAILURE", template="t", params=(("a", "1"),))
    assert listing_query(None, status="COMPLETED") == InstanceQuery(status="COMPLETED")
    assert listing_query(base) is base


class _Noop(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, object], workflow_instance: object = None) -> None:
        return None


def test_templates_declare_search_attributes() -> None:
    helper = DAGBuilderHelper()
    process = helper.generic_process_builder(
        process_name="P", root_task=helper.generic_executor_task_builder(task_type=_Noop, name="P")
    )
    plain = helper.generic_template(template_name="t", root_process=process)
    declared = helper.generic_template(template_name="t", root_process=process, search_attributes=["a", "b", "a"])
    assert plain.search_attributes == () and declared.search_attributes == ("a", "b")
    assert plain.version == declared.version  # declaring one is no new version
    for bad in ("order_id", [""], [3]):
        with pytest.raises(TaskInvalidState):
            check_search_attributes(bad)
