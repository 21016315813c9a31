"""The templates pages in a real browser: every template and version, one template's static
graph with instances per node status, and creating an instance from the form."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from .accessibility import check_both_palettes
from .conftest import Worker
from .test_instance_view import create, kitchen_ready, node
from .workflows import TEMPLATE


def test_the_list_shows_every_template_and_version(worker: Worker, page: Page) -> None:
    page.goto(f"{worker.url}/ui/templates")
    expect(page.get_by_role("link", name="Templates")).to_have_attribute("aria-current", "page")
    [listed] = worker.api.get("/api/v1/templates").json()
    row = page.locator(f"#templates tr[data-template='{TEMPLATE}']")
    expect(row).to_have_attribute("data-version", listed["version"])
    expect(row).to_contain_text("current")
    expect(row.locator("td.num").nth(1)).to_have_text(str(len(listed["nodes"])))
    row.get_by_role("link", name=TEMPLATE).click()
    expect(page.get_by_role("heading", name=f"Template {TEMPLATE}")).to_be_visible()


def test_the_static_graph_counts_instances_per_node_status_and_the_form_creates_one(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "t-1", card="declined")
    kitchen_ready(worker, "t-1")
    create(worker, "t-2", card="ok")
    # Wait (on the instance pages, live) for t-1 to fail and t-2 to wait at its listener.
    page.goto(f"{worker.url}/ui/instances/t-1")
    expect(page.locator("#instance-status")).to_have_text("failure")
    page.goto(f"{worker.url}/ui/instances/t-2")
    expect(page.locator("#current-tasks li[data-kind='listener']")).to_be_visible()

    page.goto(f"{worker.url}/ui/templates/{TEMPLATE}")
    nodes = worker.api.get("/api/v1/templates").json()[0]["nodes"]
    expect(page.locator("#template-graph [data-node]")).to_have_count(len(nodes))
    expect(page.locator("#counts-note")).to_contain_text("over the 2 newest instances")
    # Both instances passed the command; the listener of t-2 still waits, the charge of t-1 failed.
    command = node(page, "Order_command_task")
    expect(command.locator(".n-facts")).to_have_text("✓ 2 completed")
    listener = node(page, "Order_listener_task")
    expect(listener.locator(".n-facts")).to_contain_text("▶ 1 executing")
    expect(node(page, "charge_executor_task").locator(".n-facts")).to_have_text("✗ 1 failure  ○ 1 not started")
    # Each counts line ends inside its box, as drawn by the browser (10 px in from each edge).
    overflow = page.evaluate(
        """() => [...document.querySelectorAll('#template-graph .g-node')].flatMap(n => {
             const room = n.querySelector('rect.box').width.baseVal.value - 20;
             const used = n.querySelector('.n-facts').getComputedTextLength();
             return used > room ? [[n.dataset.node, used, room]] : [];
           })"""
    )
    assert overflow == []
    listener.click()
    expect(page.locator(".node-panel.selected")).to_contain_text("kitchen")
    expect(page.locator(".node-panel.selected")).to_contain_text("order_id")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "templates")

    # Create one: the form goes to the new instance's page.
    page.locator("#create-id").fill("made-in-ui")
    page.get_by_label("Runtime parameters").fill(json.dumps({"order_id": "made-in-ui", "card": "ok"}))
    page.get_by_role("button", name="Create instance").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances/made-in-ui")
    expect(page.get_by_role("status")).to_contain_text(f"Instance made-in-ui of {TEMPLATE} started")
    expect(page.locator("#current-tasks li[data-kind='listener']")).to_be_visible()
    assert worker.api.get("/api/v1/instances/made-in-ui").json()["runtime_parameters"]["card"] == "ok"


def test_a_refused_create_shows_why_and_keeps_what_was_typed(worker: Worker, page: Page) -> None:
    page.goto(f"{worker.url}/ui/templates/{TEMPLATE}")
    page.locator("#create-id").fill("has/slash")
    page.get_by_label("Runtime parameters").fill('{"order_id": "x"}')
    page.get_by_label("Submit now").uncheck()
    page.get_by_role("button", name="Create instance").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#create-id")).to_have_value("has/slash")
    expect(page.get_by_label("Runtime parameters")).to_have_value('{"order_id": "x"}')
    expect(page.get_by_label("Submit now")).not_to_be_checked()
    assert worker.api.get("/api/v1/instances").json()["total"] == 0


def test_an_unknown_template_is_a_404_page(worker: Worker, page: Page) -> None:
    answer = page.goto(f"{worker.url}/ui/templates/no_such_template")
    assert answer is not None and answer.status == 404
    expect(page.locator(".error-message")).to_contain_text("no_such_template")


def test_the_templates_pages_have_labels_and_contrast_in_both_palettes(worker: Worker, page: Page) -> None:
    for path in ("/ui/templates", f"/ui/templates/{TEMPLATE}"):
        page.goto(worker.url + path)
        page.wait_for_load_state("networkidle")
        assert check_both_palettes(page) == [], path
