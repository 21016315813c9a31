"""The instances list in a real browser: filters in the URL (status, param pairs, an invalid one
said beside the form), pages, live updates, and the top bar's search box."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Page, expect

from daggerflow import Dagger

from .accessibility import check_both_palettes
from .conftest import Worker
from .workflows import KITCHEN, TEMPLATE


def create(worker: Worker, iid: str, **params: Any) -> None:
    worker.api.post(
        f"/api/v1/templates/{TEMPLATE}/instances",
        json={"id": iid, "runtime_parameters": {"order_id": iid, **params}, "submit": True},
    ).raise_for_status()


def kitchen_ready(worker: Worker, order_id: str) -> None:
    async def send(engine: Dagger) -> None:
        await engine.topics[KITCHEN].send(key=order_id, value=json.dumps({"order_id": order_id}))

    worker.run(send)


def rows(page: Page) -> Any:
    return page.locator("#instances tbody tr")


def test_the_list_filters_by_url_and_form_and_follows_live(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    for n in range(3):
        create(worker, f"o-{n}", express=n == 1)
    create(worker, "f-1", card="declined")
    kitchen_ready(worker, "f-1")
    page.goto(f"{worker.url}/ui/instances")
    expect(page.locator(".live-status")).to_have_text("live")
    # Newest first; each row links to the instance's page.
    expect(rows(page)).to_have_count(4)
    expect(rows(page).first).to_have_attribute("data-instance", "f-1")
    expect(rows(page).first.get_by_role("link", name="f-1")).to_have_attribute("href", "/ui/instances/f-1")
    expect(page.locator("[data-instance='f-1']")).to_have_attribute("data-status", "FAILURE")
    expect(page.locator("#list-total")).to_have_text("4 instances")
    screenshot(page, "instances")

    # A status from the form: it lands in the URL, and a reload keeps it.
    page.get_by_label("Status").select_option("EXECUTING")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances?status=EXECUTING&limit=50")
    expect(rows(page)).to_have_count(3)
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("EXECUTING")
    expect(rows(page)).to_have_count(3)

    # Live: one of them completes its listener... and leaves this filtered list in place.
    kitchen_ready(worker, "o-2")
    expect(page.locator("[data-instance='o-2']")).to_have_count(0)
    expect(rows(page)).to_have_count(2)
    # ...and a new instance appears without a reload.
    create(worker, "o-9")
    expect(rows(page).first).to_have_attribute("data-instance", "o-9")

    # A runtime parameter pair: folded into param.NAME=VALUE in the URL.
    page.goto(f"{worker.url}/ui/instances")
    page.get_by_label("Parameter name").fill("order_id")
    page.get_by_label("Parameter value").fill("o-1")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances?limit=50&param.order_id=o-1")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-instance", "o-1")
    # The pair is shown filled, with a fresh empty pair for another one.
    expect(page.locator("input[name=pn]")).to_have_count(2)


def test_an_invalid_filter_is_said_beside_the_form_not_as_an_error_page(worker: Worker, page: Page) -> None:
    create(worker, "o-1")
    answer = page.goto(f"{worker.url}/ui/instances?created_after=yesterday-ish")
    assert answer is not None and answer.status == 200
    expect(page.get_by_role("alert")).to_contain_text("created_after")
    expect(page.get_by_label("Created after")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("No list: fix the filter above.")).to_be_visible()
    page.goto(f"{worker.url}/ui/instances?limit=abc")
    expect(page.get_by_role("alert")).to_have_text("limit must be a whole number, not 'abc'")


def test_pages_keep_the_filters_and_a_later_page_counts_new_instances(worker: Worker, page: Page) -> None:
    for n in range(5):
        create(worker, f"p-{n}")
    page.goto(f"{worker.url}/ui/instances?template={TEMPLATE}&limit=2")
    expect(rows(page)).to_have_count(2)
    expect(rows(page).first).to_have_attribute("data-instance", "p-4")
    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances?template={TEMPLATE}&limit=2&offset=2")
    expect(rows(page).first).to_have_attribute("data-instance", "p-2")
    expect(page.locator(".live-status")).to_have_text("live")
    create(worker, "p-5")
    # The page stays as it was; a hint says one arrived, linking to the first page.
    hint = page.locator(".new-hint")
    expect(hint).to_have_text("1 new since this page opened: first page")
    expect(rows(page).first).to_have_attribute("data-instance", "p-2")
    hint.click()
    expect(rows(page).first).to_have_attribute("data-instance", "p-5")
    # The Kafka test's contract: ?limit= and rows linked as /ui/instances/<id>.
    html = page.request.get(f"{worker.url}/ui/instances?limit=50").text()
    assert 'href="/ui/instances/p-0"' in html


def test_the_search_box_finds_an_id_a_correlation_value_and_a_topic_offset(worker: Worker, page: Page) -> None:
    create(worker, "o-1")
    create(worker, "o-2")
    page.goto(f"{worker.url}/ui/instances")
    box = page.get_by_role("searchbox")
    box.fill("o-1")
    box.press("Enter")
    # An id that exists: its page (it is also a correlation value, and the notice says so).
    expect(page).to_have_url(f"{worker.url}/ui/instances/o-1")
    expect(page.get_by_role("status").first).to_contain_text("matched this instance's id")

    # Not an id: the instances waiting with it as their correlation value.
    create(worker, "x-1", order_id="ext-77")
    page.get_by_role("searchbox").fill("ext-77")
    page.get_by_role("searchbox").press("Enter")
    expect(page).to_have_url(f"{worker.url}/ui/instances?correlation=ext-77")
    expect(page.get_by_role("status").first).to_contain_text("no instance has that id")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-instance", "x-1")

    # topic:offset and topic:partition:offset on a known topic: that message's page.
    answer = page.request.get(f"{worker.url}/ui/search?q={quote('kitchen:3')}", max_redirects=0)
    assert answer.status == 303 and answer.headers["location"] == "/ui/messages/kitchen/3"
    answer = page.request.get(f"{worker.url}/ui/search?q={quote('orders:0:12')}", max_redirects=0)
    assert answer.headers["location"] == "/ui/messages/orders/12?partition=0"
    # An unknown topic: read as a correlation value.
    answer = page.request.get(f"{worker.url}/ui/search?q={quote('nope:3')}", max_redirects=0)
    assert answer.headers["location"] == "/ui/instances?correlation=nope%3A3"


def test_the_list_views_have_labels_and_contrast_in_both_palettes(worker: Worker, page: Page) -> None:
    create(worker, "o-1")
    create(worker, "f-1", card="declined")
    kitchen_ready(worker, "f-1")
    worker.api.post("/api/v1/instances/bulk", json={"action": "stop", "filter": {"param.order_id": "o-1"}})
    for path in ("/ui/", "/ui/instances", "/ui/instances?created_after=bad", "/ui/waiting", "/ui/bulk",
                 "/ui/bulk/new?action=retry&status=FAILURE"):  # fmt: skip
        page.goto(worker.url + path)
        page.wait_for_load_state("networkidle")
        assert check_both_palettes(page) == [], path
