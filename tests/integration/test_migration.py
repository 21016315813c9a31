"""Template versions and migrations on the embedded runtime, over a real SQLite file (or
RocksDB with ``DAGGERFLOW_TEST_STORE=rocksdb``) and a real HTTP server: a deploy changes a
template while instances wait in a listener; they are listed by version, migrated (dry and
for real, by REST, the CLI and the Python API) and complete under the new version. A task
whose class a deploy removed fails naming its type, and a retry after the class is back
completes it."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from daggerflow import (
    DAGBuilderHelper,
    Dagger,
    ExecutorTask,
    InvalidInput,
    TaskInvalidState,
    TemplateDoesNotExist,
)
from daggerflow.machine import Migrate
from daggerflow.model.instance import Instance
from daggerflow.model.template import instantiate
from daggerflow.pipeline.clock import ManualClock

from ..conftest import TEST_STORE
from .test_repair import cli
from .test_rest import ORDER_CMD, ORDER_READY, WaitReady, listener_waiting, send_order_task

LISTENER = "orders.Order.Order_listener_task"
RENAMED = "orders.Order.await_ready"


class Invoice(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["invoiced"] = True


class Finisher(ExecutorTask[str, str]):
    async def execute(self, runtime_parameters: dict[str, Any], workflow_instance: Any = None) -> None:
        runtime_parameters["finished"] = True


def orders(engine: Dagger, *, version: int, search: tuple[str, ...] = ()) -> None:
    """v1: send the order, wait until it is ready. v2: the listener renamed, and an invoice
    task after it. ``search``: the template's declared search attributes."""
    helper = DAGBuilderHelper(engine)
    wait = helper.generic_listener_task_builder(topic=ORDER_READY, task_type=WaitReady, process_name="Order")
    tasks: list[Any] = [helper.generic_command_task_builder(topic=ORDER_CMD, task_type=send_order_task(engine),
                                                            process_name="Order"), wait]  # fmt: skip
    if version == 2:
        wait.set_name("await_ready")
        tasks.append(helper.generic_executor_task_builder(task_type=Invoice, name="Invoice"))
    process = helper.generic_process_builder(process_name="Order", root_task=helper.build_and_link_tasks(tasks))
    engine.add_template("orders", helper.generic_template(template_name="orders", root_process=process),
                        search_attributes=list(search))  # fmt: skip


def later(engine: Dagger, *, with_finisher: bool) -> None:
    """Wait for the order, then (where the class is deployed) finish it."""
    helper = DAGBuilderHelper(engine)
    tasks: list[Any] = [helper.generic_listener_task_builder(topic=ORDER_READY, task_type=WaitReady,
                                                             process_name="Later")]  # fmt: skip
    if with_finisher:
        tasks.append(helper.generic_executor_task_builder(task_type=Finisher, name="Finish"))
    process = helper.generic_process_builder(process_name="Later", root_task=helper.build_and_link_tasks(tasks))
    engine.add_template("later", helper.generic_template(template_name="later", root_process=process))


@pytest.fixture(params=["sqlite", "rocksdb"])
def engines(request: pytest.FixtureRequest, make_engine: Callable[..., Dagger], tmp_path: Path) -> Callable[..., Dagger]:
    """``make_engine`` on each store kind (one database per ``name``, as make_engine's)."""
    if request.param == "rocksdb":
        pytest.importorskip("rocksdict")

    def factory(name: str = "engine", **options: Any) -> Dagger:
        where = f"rocksdb:///{tmp_path}/{name}" if request.param == "rocksdb" else f"sqlite:///{tmp_path}/{name}.db"
        return make_engine(name=name, store=where, **options)

    return factory


async def waiting_orders(make_engine: Callable[..., Dagger], ids: list[str]) -> str:
    """Instances of orders v1 waiting in their listener, in the store of engine "db"; v1's version."""
    old = make_engine(name="db")
    orders(old, version=1)
    async with old:
        for iid in ids:
            await old.template_dags["orders"].create_instance(iid, submit_task=True, order_id=iid)
        for iid in ids:
            await old.wait_for(iid, listener_waiting, timeout=10)
        return old.template_dags["orders"].spec.version()


async def ready(engine: Dagger, client: httpx.AsyncClient, iid: str) -> Instance:
    r = await client.post(f"/topics/{ORDER_READY}/messages", json={"value": json.dumps({"order_id": iid})})
    assert r.status_code == 202, r.text
    await engine.wait_for(iid, timeout=10)
    found = await engine.get_instance_state(iid)
    assert found is not None
    return found


async def test_instances_waiting_in_a_listener_migrate_and_complete_under_the_new_version(
    engines: Callable[..., Dagger],
) -> None:
    make_engine = engines
    v1 = await waiting_orders(make_engine, ["m1", "m2", "m3", "m4"])
    engine = make_engine(name="db", web_port=0)
    orders(engine, version=2)
    async with engine, httpx.AsyncClient(base_url=str(engine.web_url), timeout=10) as client:
        v2 = engine.template_dags["orders"].spec.version()
        listed = (await client.get("/api/v1/templates")).json()
        by_version = {t["version"]: t for t in listed if t["name"] == "orders"}
        assert set(by_version) == {v1, v2}
        assert by_version[v2]["current"] is True and by_version[v2]["running"] == 0
        assert by_version[v1]["current"] is False and by_version[v1]["running"] == 4
        assert LISTENER in {n["name"] for n in by_version[v1]["nodes"]}
        assert RENAMED in {n["name"] for n in by_version[v2]["nodes"]}

        # Without a map the renamed listener has no counterpart: every instance is refused.
        dry = await client.post("/api/v1/migrations", json={"template": "orders", "from_version": v1, "dry_run": True})
        assert dry.status_code == 200, dry.text
        report = dry.json()
        assert report["matched"] == 4 and report["migrated"] == 0 and report["refused"] == 4
        assert all("is waiting" in i["reason"] for i in report["instances"])
        body = {"template": "orders", "from_version": v1, "node_map": {LISTENER: RENAMED}}
        dry = (await client.post("/api/v1/migrations", json={**body, "dry_run": True})).json()
        assert dry["migrated"] == 4 and {i["action"] for i in dry["instances"]} == {"migrate"}
        assert (await engine.get_instance_state("m1")).template_version == v1  # type: ignore[union-attr]

        # One instance by filter, through REST.
        r = await client.post("/api/v1/migrations", json={**body, "filter": {"param.order_id": "m1"}},
                              params={"actor": "ops"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert [(i["id"], i["action"]) for i in r.json()["instances"]] == [("m1", "migrate")]
        m1 = await engine.get_instance_state("m1")
        assert m1 is not None and m1.template_version == v2 and listener_waiting(m1)
        # The history records the migration with its actor and the versions.
        page = (await client.get("/api/v1/instances/m1/history")).json()
        moved = [e for e in page["items"] if e["event"] == "migrate"]
        assert len(moved) == 1 and moved[0]["actor"] == "ops" and moved[0]["detail"].endswith(f"-> {v2}"), moved

        # One through the CLI (dry first), the rest through the Python API.
        code, out = await cli(str(engine.web_url), "migrate", "--template", "orders", "--from", v1, "--map",
                              f"{LISTENER}={RENAMED}", "--filter", "param.order_id=m2", "--dry-run", "--json")  # fmt: skip
        assert code == 0, out
        dry_cli = json.loads(out)
        assert dry_cli["dry_run"] is True and [i["id"] for i in dry_cli["instances"]] == ["m2"]
        assert (await engine.get_instance_state("m2")).template_version == v1  # type: ignore[union-attr]
        code, out = await cli(str(engine.web_url), "migrate", "--template", "orders", "--from", v1, "--map",
                              f"{LISTENER}={RENAMED}", "--filter", "param.order_id=m2")  # fmt: skip
        assert code == 0 and "migrated 1" in out, out
        code, out = await cli(str(engine.web_url), "migrate", "--template", "orders", "--from", v1, "--map", "x")
        assert code == 2 and "NAME=VALUE" in out, out
        report_api = await engine.migrate("orders", v1, node_map={LISTENER: RENAMED})
        assert sorted(i.id for i in report_api.instances if i.action == "migrate") == ["m3", "m4"]

        listed = (await client.get("/api/v1/templates")).json()
        by_version = {t["version"]: t for t in listed if t["name"] == "orders"}
        assert by_version[v2]["running"] == 4 and by_version[v1]["running"] == 0  # v1 kept by the store
        code, out = await cli(str(engine.web_url), "templates")
        assert code == 0 and v1[:8] in out and v2[:8] in out, out

        # The listener's message completes them, and the new version's task runs.
        for iid in ("m1", "m2", "m3", "m4"):
            done = await ready(engine, client, iid)
            assert done.status == "COMPLETED" and done.runtime_parameters.get("invoiced") is True, iid
            assert {n.name for n in done.nodes.values()} >= {RENAMED, "orders.Order.Invoice_executor_task"}


async def test_migration_input_is_checked(make_engine: Callable[..., Dagger]) -> None:
    v1 = await waiting_orders(make_engine, ["n1"])
    engine = make_engine(name="db", web_port=0)
    orders(engine, version=2)
    async with engine, httpx.AsyncClient(base_url=str(engine.web_url), timeout=10) as client:
        v2 = engine.template_dags["orders"].spec.version()
        with pytest.raises(TemplateDoesNotExist):
            await engine.migrate("nope", v1)
        with pytest.raises(InvalidInput, match="not registered in this worker"):
            await engine.migrate("orders", v1, "0123456789abcdef")
        with pytest.raises(InvalidInput, match="both"):
            await engine.migrate("orders", v2)
        with pytest.raises(InvalidInput, match=r"has no node 'orders\.nope'"):
            await engine.migrate("orders", v1, node_map={LISTENER: "orders.nope"})
        with pytest.raises(InvalidInput, match="unknown filter"):
            await engine.migrate("orders", v1, filter={"colour": "red"})
        with pytest.raises(InvalidInput, match="only running"):
            await engine.migrate("orders", v1, filter={"status": "COMPLETED"})
        r = await client.post("/api/v1/migrations", json={"template": "nope", "from_version": v1})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = await client.post("/api/v1/migrations", json={"template": "orders", "from_version": v1, "to_version": "x"})
        assert r.status_code == 422 and "not registered" in r.json()["error"]
        r = await client.post("/api/v1/migrations", json={"template": "orders", "from_version": v1, "extra": 1})
        assert r.status_code == 400
        r = await client.post("/api/v1/migrations", json={"template": "orders", "from_version": v1,
                                                          "filter": {"colour": "red"}})  # fmt: skip
        # A filter error is the 400 of the listing and of bulk actions, naming the filter.
        assert r.status_code == 400 and "colour" in r.json()["error"], r.text
        assert r.json()["type"] == "InvalidFilter" and r.json()["filter"] == "colour"
        for bad, named in (({"status": "COMPLETED"}, "status"), ({"version": "0123456789abcdef"}, "version"),
                           ({"created_after": "yesterday"}, "created_after")):  # fmt: skip
            r = await client.post("/api/v1/migrations", json={"template": "orders", "from_version": v1, "filter": bad})
            assert r.status_code == 400 and r.json()["filter"] == named, r.text
        listing = await client.get("/api/v1/instances", params={"colour": "red"})
        bulk = await client.post("/api/v1/instances/bulk", json={"action": "stop", "filter": {"colour": "red"}})
        assert {listing.status_code, bulk.status_code} == {400}
        assert listing.json()["filter"] == bulk.json()["filter"] == "colour", (listing.text, bulk.text)
        # The instance is untouched, and the worker goes on.
        n1 = await engine.get_instance_state("n1")
        assert n1 is not None and n1.template_version == v1 and listener_waiting(n1)


async def test_a_removed_task_class_fails_naming_it_and_a_retry_after_the_deploy_completes(
    engines: Callable[..., Dagger], caplog: pytest.LogCaptureFixture
) -> None:
    make_engine = engines
    first = make_engine(name="db")
    later(first, with_finisher=True)
    async with first:
        await first.template_dags["later"].create_instance("f1", submit_task=True, order_id="f1")
        await first.wait_for("f1", listener_waiting, timeout=10)
        v1 = first.template_dags["later"].spec.version()

    # A deploy without the Finisher class: the start-up check says what f1 needs.
    second = make_engine(name="db", web_port=0)
    later(second, with_finisher=False)
    with caplog.at_level(logging.WARNING, logger="daggerflow"):
        async with second, httpx.AsyncClient(base_url=str(second.web_url), timeout=10) as client:
            warnings = [r.getMessage() for r in caplog.records if v1 in r.getMessage()]
            assert len(warnings) == 1 and "task types Finisher" in warnings[0], warnings
            listed = {t["version"]: t for t in (await client.get("/api/v1/templates")).json()}
            assert listed[v1]["missing_task_types"] == ["Finisher"] and listed[v1]["running"] == 1
            failed = await ready(second, client, "f1")
            assert failed.status == "FAILURE"
            node = next(n for n in failed.nodes.values() if n.type_name == "Finisher")
            assert node.status == "FAILURE"
            assert node.error is not None and "task type 'Finisher' is not registered in this worker" in node.error

    # The class is back: a retry completes the workflow.
    third = make_engine(name="db")
    later(third, with_finisher=True)
    async with third:
        await third.retry("f1")
        await third.wait_for("f1", timeout=10)
        done = await third.get_instance_state("f1")
        assert done is not None and done.status == "COMPLETED" and done.runtime_parameters["finished"] is True


async def test_the_owner_refuses_a_target_version_it_does_not_register(make_engine: Callable[..., Dagger]) -> None:
    await waiting_orders(make_engine, ["o1"])
    engine = make_engine(name="db")
    orders(engine, version=1)
    async with engine:
        other = make_engine(name="other")
        orders(other, version=2)  # the code of another deploy: its tree, built elsewhere
        spec = other.template_dags["orders"].spec
        found = await engine.get_instance_state("o1")
        assert found is not None
        target = instantiate(spec, "o1", dict(found.runtime_parameters), now=0.0)
        with pytest.raises(TaskInvalidState, match="not registered on the worker that owns workflow o1"):
            await engine.runtime.call("o1", Migrate(target, found.template_version, {LISTENER: RENAMED}))  # type: ignore[union-attr]
        assert (await engine.get_instance_state("o1")).template_version == found.template_version  # type: ignore[union-attr]


async def test_a_migration_pages_through_every_match_and_takes_the_new_versions_search_attributes(
    make_engine: Callable[..., Dagger], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """More matches than a page (pages of 2; some created at the same time, so the page key
    repeats): each is migrated once, none skipped. The migrated instances keep their history
    and are indexed by what the target version declares."""
    from daggerflow import migration

    monkeypatch.setattr(migration, "PAGE", 2)
    ids = [f"p{i}" for i in range(7)]
    clock = ManualClock()
    old = make_engine(name="db", clock=clock)
    orders(old, version=1)
    async with old:
        for iid in ids:
            if iid not in ("p3", "p4", "p5"):  # p2..p5 are created at one instant
                clock.advance(1.0)
            await old.template_dags["orders"].create_instance(
                iid, submit_task=True, order_id=iid, customer=f"c-{iid}"
            )
        for iid in ids:
            await old.wait_for(iid, listener_waiting, timeout=10)
        v1 = old.template_dags["orders"].spec.version()
        before = {iid: len((await old.history(iid)).items) for iid in ids}
    engine = make_engine(name="db")
    orders(engine, version=2, search=("customer",))
    async with engine:
        dry = await engine.migrate("orders", v1, node_map={LISTENER: RENAMED}, dry_run=True)
        assert sorted(i.id for i in dry.instances) == ids and dry.migrated == 7
        report = await engine.migrate("orders", v1, node_map={LISTENER: RENAMED})
        assert sorted(i.id for i in report.instances) == ids and report.migrated == 7, report
        again = await engine.migrate("orders", v1, node_map={LISTENER: RENAMED})
        assert again.matched == 0
        for iid in ids:
            moved = await engine.get_instance_state(iid)
            assert moved is not None and moved.search_keys == ("customer",), moved.search_keys
            history = (await engine.history(iid)).items
            assert len(history) == before[iid] + 1 and history[-1].event == "migrate", history
        assert [i.id for i in engine.list_instances(params={"customer": "c-p3"})] == ["p3"]
    if TEST_STORE != "rocksdb":  # the rows the search index holds for them now
        with closing(sqlite3.connect(tmp_path / "db.db")) as db:
            rows = db.execute(
                "SELECT instance, value FROM search WHERE name = 'customer' ORDER BY instance"
            ).fetchall()
        assert rows == [(iid, f"c-{iid}") for iid in ids]
