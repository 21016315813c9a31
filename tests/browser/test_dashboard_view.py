"""The dashboard in a real browser: counts by template and status linking to the filtered list,
failures in the last hour, the oldest listeners, throughput between two live samples, live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from .accessibility import check_both_palettes
from .conftest import Worker
from .test_instances_view import create, kitchen_ready
from .workflows import TEMPLATE


def test_the_dashboard_counts_links_and_follows_live(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "o-1")
    create(worker, "o-2")
    create(worker, "f-1", card="declined")
    kitchen_ready(worker, "f-1")
    page.goto(f"{worker.url}/ui/")
    expect(page.locator(".live-status")).to_have_text("live")
    row = page.locator("#status-counts tr[data-template='order_flow']")
    expect(row.locator("td[data-status='EXECUTING']")).to_have_text("2")
    expect(row.locator("td[data-status='FAILURE']")).to_have_text("1")
    expect(page.locator("#card-failed .figure")).to_have_text("1")
    expect(page.locator("#card-waiting .figure")).to_have_text("2")
    # Oldest listener first, with its key=value.
    listeners = page.locator("#oldest-listeners tbody tr")
    expect(listeners).to_have_count(2)
    expect(listeners.first).to_have_attribute("data-instance", "o-1")
    expect(listeners.first).to_contain_text("order_id=o-1")
    # Throughput needs two samples of the stream; then a rate is shown.
    expect(page.locator("#throughput dt").first).to_have_text("created")
    # The dead-letter count only where the worker has the route.
    has_dead_letters = worker.api.get("/api/v1/dead-letters", params={"limit": 1}).status_code != 404
    expect(page.locator("#card-dead")).to_have_count(1 if has_dead_letters else 0)
    expect(page.locator("#dash-partitions")).to_have_count(0)  # (Kafka only: partitions without an owner)
    screenshot(page, "dashboard")

    # Live: a new instance and a completed listener change the counts without a reload.
    create(worker, "o-3")
    kitchen_ready(worker, "o-1")
    expect(page.locator("#card-waiting .figure")).to_have_text("2")
    expect(listeners.first).to_have_attribute("data-instance", "o-2")
    expect(page.locator("#card-total .figure")).to_have_text("4")

    # A count is a link to the list with that template and status.
    row.locator("td[data-status='FAILURE'] a").click()
    expect(page).to_have_url(f"{worker.url}/ui/instances?template={TEMPLATE}&status=FAILURE")
    expect(page.locator("#instances tbody tr")).to_have_count(1)
    page.go_back()
    page.locator("#card-failed a").click()
    expect(page.locator("#instances tbody tr[data-instance='f-1']")).to_have_count(1)
    expect(page.get_by_label("Status")).to_have_value("FAILURE")


def test_the_workers_page_from_the_dashboard_shows_this_worker_live(
    worker: Worker, page: Page, screenshot: Callable[[Page, str], Path]
) -> None:
    create(worker, "w-1")
    page.goto(f"{worker.url}/ui/")
    page.locator("#workers-link").click()
    expect(page).to_have_url(f"{worker.url}/ui/workers")
    expect(page.locator(".live-status")).to_have_text("live")
    row = page.locator("#workers tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td[data-partitions]")).to_have_text("0")
    expect(page.locator("#partitions")).to_have_count(0)  # embedded: no partition table
    transitions = row.locator("td.num").last
    before = int(transitions.inner_text())
    create(worker, "w-2")  # the counters follow without a reload
    expect(transitions).not_to_have_text(str(before))
    assert int(transitions.inner_text()) > before
    screenshot(page, "workers")
    assert check_both_palettes(page) == []
