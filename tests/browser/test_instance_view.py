"""The instance page in a real browser: header and current tasks, the graph and its node
details, parameters and the history timeline, live; and the operators' actions from the UI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from daggerflow import Dagger

from .accessibility import check_both_palettes
from .conftest import Worker, start_worker
from .workflows import KITCHEN, TEMPLATE

#: How the page writes how long a task has waited: "850 ms", "3.2 s", "2m 05s".
AGE = re.compile(r"^\d+(\.\d)? (ms|s)$|^\d+m \d\ds$")


def create(worker: Worker, iid: str, submit: bool = True, **params: Any) -> None:
    worker.api.post(
        f"/api/v1/templates/{TEMPLATE}/instances",
        json={"id": iid, "runtime_parameters": {"order_id": iid, **params}, "submit": submit},
    ).raise_for_status()


def kitchen_ready(worker: Worker, order_id: str) -> None:
    async def send(engine: Dagger) -> None:
        await engine.topics[KITCHEN].send(key=order_id, value=json.dumps({"order_id": order_id}))

    worker.run(send)


def status_of(worker: Worker, iid: str) -> str:
    code: str = worker.api.get(f"/api/v1/instances/{iid}").json()["status"]["code"]
    return code


def node(page: Page, name: str) -> Any:
    """The graph's node whose short label is ``name``."""
    return page.locator("svg.graph a.g-node").filter(has=page.locator("text.n-label", has_text=name))


def wait_listening(page: Page, worker: Worker, iid: str) -> None:
    page.goto(f"{worker.url}/ui/instances/{iid}")
    expect(page.locator(".live-status")).to_have_text("live")
    expect(page.locator("#current-tasks li[data-kind='listener']")).to_be_visible()


def test_header_current_listener_graph_details_and_live_progress(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "o-1", card="ok")
    wait_listening(page, worker, "o-1")
    header = page.locator("#instance-header")
    expect(header.locator("#instance-status")).to_have_text("executing")
    expect(header).to_contain_text(TEMPLATE)
    listener = page.locator("#current-tasks li[data-kind='listener']")
    expect(listener).to_contain_text("Order_listener_task")
    expect(listener).to_contain_text("waiting for a message on kitchen with order_id = o-1")
    expect(listener.locator("time.age")).to_have_text(AGE)

    # Every task of the snapshot is in the graph, each with its status as a word.
    tasks = worker.api.get("/api/v1/instances/o-1").json()["tasks"]
    expect(page.locator("svg.graph [data-node]")).to_have_count(len(tasks))
    expect(node(page, "Order_command_task")).to_have_attribute("data-status", "COMPLETED")
    expect(node(page, "Order_command_task").locator(".n-status")).to_have_text("✓ completed")
    expect(node(page, "Order_listener_task")).to_have_attribute("data-status", "EXECUTING")

    # A click opens the node's details: topic, correlation key and value, how long it waits.
    node(page, "Order_listener_task").click()
    panel = page.locator(".node-panel.selected")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("kitchen")
    expect(panel).to_contain_text("order_id")
    expect(panel.locator(".correlation-value")).to_have_text("o-1")
    expect(panel).to_contain_text("Waiting for")
    # A command's details say what it sent: topic, key, size and the value.
    node(page, "Order_command_task").click()
    sent = page.locator(".node-panel.selected .sent-message")
    expect(page.locator(".node-panel.selected h4")).to_have_text("Sent")
    expect(sent).to_have_count(1)
    expect(sent).to_contain_text("orders")
    expect(sent).to_contain_text("key o-1")
    expect(sent.locator("pre")).to_have_text('{"order_id": "o-1", "items": 2}')
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "instance")

    # The message arrives behind the page's back: header, graph and history follow live.
    kitchen_ready(worker, "o-1")
    expect(header.locator("#instance-status")).to_have_text("completed")
    expect(node(page, "charge_executor_task")).to_have_attribute("data-status", "COMPLETED")
    expect(node(page, "standard_executor_task")).to_have_attribute("data-branch", "chosen")
    expect(node(page, "express_executor_task")).to_have_attribute("data-branch", "skipped")
    expect(node(page, "express_executor_task").locator(".n-status")).to_have_text("↷ skipped · branch not taken")
    expect(page.locator("#current-tasks")).to_have_count(0)
    expect(page.locator("#history-entries tr[data-event='deliver']")).to_contain_text("kitchen")
    expect(page.locator("#runtime-parameters")).to_contain_text('"charged": true')
    # The timeline tells the listener's wait (hatched) from the tasks' execution (solid).
    listener_row = page.locator("svg.timeline g.tl-row").filter(has=page.locator("text", has_text="Order_listener_task"))
    expect(listener_row.locator("rect[data-state='waiting']")).to_have_count(1)
    charge_row = page.locator("svg.timeline g.tl-row").filter(has=page.locator("text", has_text="charge_executor_task"))
    expect(charge_row.locator("rect[data-state='executing']")).to_have_count(1)
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)


def test_a_node_opens_from_the_keyboard(worker: Worker, page: Page) -> None:
    create(worker, "k-1", card="ok")
    wait_listening(page, worker, "k-1")
    target = node(page, "Order_listener_task")
    target.focus()
    expect(target).to_be_focused()
    page.keyboard.press("Enter")
    panel = page.locator(".node-panel.selected")
    expect(panel).to_be_visible()
    expect(panel.locator("h3")).to_contain_text("Order_listener_task")
    # The choice is in the URL and survives a reload.
    page.reload()
    expect(page.locator(".node-panel.selected h3")).to_contain_text("Order_listener_task")


def test_retry_a_failed_instance_with_a_parameter_patch_and_watch_it_complete(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "f-1", card="declined")
    kitchen_ready(worker, "f-1")
    page.goto(f"{worker.url}/ui/instances/f-1")
    expect(page.locator("#instance-status")).to_have_text("failure")
    expect(page.locator(".instance-error")).to_contain_text("card declined for order f-1")
    expect(node(page, "charge_executor_task")).to_have_attribute("data-status", "FAILURE")
    node(page, "charge_executor_task").click()
    expect(page.locator(".node-panel.selected .traceback")).to_contain_text("RuntimeError: card declined")
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "instance-failed")

    page.get_by_role("button", name="Retry").click()
    dialog = page.get_by_role("dialog", name="Retry instance f-1?")
    expect(dialog).to_be_visible()
    patch = dialog.get_by_label("Parameter patch")
    # Not JSON: said at once, and the dialog does not submit it.
    patch.fill('{"card": ')
    expect(dialog.locator("[data-json-error]")).to_contain_text("not valid JSON")
    dialog.get_by_role("button", name="Retry").click()
    expect(dialog).to_be_visible()
    assert status_of(worker, "f-1") == "FAILURE"

    patch.fill('{"card": "ok"}')
    expect(dialog.locator("[data-json-error]")).to_have_text("")
    dialog.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("Instance f-1 retried with card changed")
    expect(page.locator("#instance-status")).to_have_text("completed")
    expect(node(page, "charge_executor_task")).to_have_attribute("data-status", "COMPLETED")
    expect(page.locator("#runtime-parameters")).to_contain_text('"card": "ok"')
    retry_entry = page.locator("#history-entries tr[data-event='retry']")
    expect(retry_entry).to_contain_text("console")
    assert status_of(worker, "f-1") == "COMPLETED"


def test_a_patch_that_is_not_an_object_is_refused_by_the_console_with_nothing_changed(
    worker: Worker, page: Page
) -> None:
    create(worker, "p-0", card="declined")
    kitchen_ready(worker, "p-0")
    page.goto(f"{worker.url}/ui/instances/p-0")
    expect(page.locator("#instance-status")).to_have_text("failure")
    csrf = page.locator("dialog form input[name='csrf']").first.get_attribute("value")
    answer = page.request.post(f"{worker.url}/ui/instances/p-0/retry", form={"csrf": csrf or "", "patch": "[1, 2]"})
    # The redirect back to the page shows why, and the instance is as it was.
    assert answer.ok and answer.url == f"{worker.url}/ui/instances/p-0"
    assert "The parameter patch must be a JSON object" in answer.text()
    assert status_of(worker, "p-0") == "FAILURE"


def test_complete_a_waiting_listener_from_its_details(worker: Worker, page: Page) -> None:
    create(worker, "c-1", card="ok")
    wait_listening(page, worker, "c-1")
    node(page, "Order_listener_task").click()
    panel = page.locator(".node-panel.selected")
    panel.get_by_role("button", name="Complete").click()
    dialog = page.get_by_role("dialog", name="Complete task Order_listener_task?")
    dialog.get_by_role("button", name="Complete").click()
    expect(page.get_by_role("status")).to_contain_text("Task order_flow.Order.Order_listener_task completed")
    expect(page.locator("#instance-status")).to_have_text("completed")
    expect(page.locator("#history-entries tr[data-event='complete']")).to_contain_text("console")


def test_skip_a_waiting_listener(worker: Worker, page: Page) -> None:
    create(worker, "s-1", card="ok")
    wait_listening(page, worker, "s-1")
    node(page, "Order_listener_task").click()
    page.locator(".node-panel.selected").get_by_role("button", name="Skip").click()
    page.get_by_role("dialog", name="Skip task Order_listener_task?").get_by_role("button", name="Skip").click()
    expect(page.get_by_role("status")).to_contain_text("skipped")
    expect(node(page, "Order_listener_task")).to_have_attribute("data-status", "SKIPPED")
    expect(page.locator("#instance-status")).to_have_text("completed")


def test_stop_an_instance(worker: Worker, page: Page) -> None:
    create(worker, "x-1", card="ok")
    wait_listening(page, worker, "x-1")
    page.get_by_role("button", name="Stop").click()
    dialog = page.get_by_role("dialog", name="Stop instance x-1?")
    dialog.get_by_role("button", name="Cancel").click()
    assert status_of(worker, "x-1") == "EXECUTING"
    page.get_by_role("button", name="Stop").click()
    dialog.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_contain_text("Instance x-1 stopped")
    expect(page.locator("#instance-status")).to_have_text("stopped")
    expect(node(page, "Order_listener_task")).to_have_attribute("data-status", "STOPPED")
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)


def test_patch_parameters_then_submit_a_created_instance(worker: Worker, page: Page) -> None:
    create(worker, "n-1", submit=False, card="ok")
    page.goto(f"{worker.url}/ui/instances/n-1")
    expect(page.locator("#instance-status")).to_have_text("not started")
    page.get_by_role("button", name="Patch parameters").click()
    dialog = page.get_by_role("dialog", name="Change runtime parameters of n-1?")
    dialog.get_by_label("Parameters to change").fill('{"express": true}')
    dialog.get_by_role("button", name="Patch parameters").click()
    expect(page.get_by_role("status")).to_contain_text("Runtime parameters of n-1 changed: express")
    expect(page.locator("#runtime-parameters")).to_contain_text('"express": true')

    page.get_by_role("button", name="Submit").click()
    page.get_by_role("dialog", name="Submit instance n-1?").get_by_role("button", name="Submit").click()
    expect(page.get_by_role("status")).to_contain_text("Instance n-1 submitted")
    expect(page.locator("#current-tasks li[data-kind='listener']")).to_be_visible()
    kitchen_ready(worker, "n-1")
    expect(page.locator("#instance-status")).to_have_text("completed")
    expect(node(page, "express_executor_task")).to_have_attribute("data-branch", "chosen")
    expect(node(page, "standard_executor_task")).to_have_attribute("data-branch", "skipped")


def test_an_unknown_instance_is_a_404_page(worker: Worker, page: Page) -> None:
    answer = page.goto(f"{worker.url}/ui/instances/no-such-instance")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="404 · Not Found")).to_be_visible()
    expect(page.locator(".error-message")).to_contain_text("no-such-instance")


def test_a_read_token_sees_the_instance_and_no_action(tmp_path: Path, page: Page) -> None:
    admin, read = "console-admin-token-0123456789", "console-read-token-0123456789"
    w = start_worker(tmp_path, api_token=[f"admin:{admin}", f"read:{read}"])
    try:
        w.api.post(
            f"/api/v1/templates/{TEMPLATE}/instances",
            json={"id": "r-1", "runtime_parameters": {"order_id": "r-1", "card": "ok"}},
            headers={"authorization": f"Bearer {admin}"},
        ).raise_for_status()
        page.goto(f"{w.url}/ui/instances/r-1")
        page.get_by_label("API token").fill(read)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{w.url}/ui/instances/r-1")
        expect(page.locator("#current-tasks li[data-kind='listener']")).to_be_visible()
        node(page, "Order_listener_task").click()
        expect(page.locator(".node-panel.selected")).to_contain_text("kitchen")
        expect(page.locator("main button")).to_have_count(0)
        page.goto(f"{w.url}/ui/templates/{TEMPLATE}")
        expect(page.get_by_text("Creating an instance needs an admin token.")).to_be_visible()
        expect(page.get_by_role("button", name="Create instance")).to_have_count(0)
    finally:
        w.close()


def test_a_failed_and_a_waiting_instance_have_labels_and_contrast_in_both_palettes(worker: Worker, page: Page) -> None:
    create(worker, "c-1", card="declined")
    kitchen_ready(worker, "c-1")
    create(worker, "c-2", card="ok")
    page.goto(f"{worker.url}/ui/instances/c-1")
    expect(page.locator("#instance-status")).to_have_text("failure")
    assert check_both_palettes(page) == []
    wait_listening(page, worker, "c-2")
    assert check_both_palettes(page) == []
